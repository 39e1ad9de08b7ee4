// Models that call extension operators (torchvision::nms): a clear error until
// the operator library is loaded, PyTorch's result after. Its own file, so its
// own process: loaded operators stay registered for the life of a process.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, loadLibrary, versions } from '../lib';
import { expectMatches, fixtures, generation, inputsOf, model, ROOT } from './helpers/fixtures';

// The torchvision ops library the fixtures name is Debian's, built for libtorch 1.13.
const sameLibtorch = generation(versions.libtorch) === '1.13';

describe('operator libraries', () => {
  it('a model using torchvision::nms fails with ERR_UNSUPPORTED naming the operator and the fix', async () => {
    await expect(load(model('ops_nms').path)).rejects.toMatchObject({
      code: 'ERR_UNSUPPORTED',
      message: expect.stringMatching(/calls the operator torchvision::nms[\s\S]*loadLibrary/),
    });
  });

  it.skipIf(sameLibtorch)('a library built for another libtorch is refused before it is loaded: ERR_UNSUPPORTED, both sides named', async () => {
    // Loading Debian's torchvision (libtorch 1.13) into a libtorch 2.x process would crash it.
    const lib = fixtures().torchvision_ops_library;
    expect(fs.existsSync(lib)).toBe(true);
    await expect(loadLibrary(lib)).rejects.toMatchObject({
      code: 'ERR_UNSUPPORTED',
      message: expect.stringMatching(new RegExp(`was built against another libtorch: it needs libc10\\.so\\.1\\.13, ` +
        `libtorch_cpu\\.so\\.1\\.13, and this process runs libtorch ${versions.libtorch.replace(/[.+]/g, '\\$&')}`)),
    });
    // The refusal left nothing behind: the model still needs the library.
    await expect(load(model('ops_nms').path)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED' });
  });

  it.skipIf(!sameLibtorch)(`after loadLibrary(torchvision's library) it loads and matches PyTorch${sameLibtorch ? '' :
    ' (skipped: the only torchvision ops library here is for libtorch 1.13; 0.29\'s needs libtorch_python)'}`, async () => {
    const lib = fixtures().torchvision_ops_library;
    expect(fs.existsSync(lib)).toBe(true);
    await loadLibrary(lib);
    await loadLibrary(lib); // loading twice is harmless
    const f = model('ops_nms');
    const m = await load(f.path);
    expectMatches(await m.forward(...inputsOf(f.cases[0])), f.cases[0].output, 0);
  });

  it('loadLibrary errors: missing file, not a library, bad argument', async () => {
    await expect(loadLibrary(path.join(ROOT, 'no-such-lib.so'))).rejects.toMatchObject({ code: 'ERR_FILE_NOT_FOUND' });
    await expect(loadLibrary(path.join(ROOT, 'package.json'))).rejects.toMatchObject({
      code: 'ERR_TORCH', message: expect.stringMatching(/Cannot load operator library .*package\.json/),
    });
    await expect(loadLibrary(ROOT)).rejects.toMatchObject({ code: 'ERR_NOT_A_FILE' });
    expect(() => loadLibrary(7 as never)).toThrow(TypeError);
  });
});
