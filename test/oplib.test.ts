// Models that call extension operators (torchvision::nms): a clear error until
// the operator library is loaded, PyTorch's result after. Its own file, so its
// own process: loaded operators stay registered for the life of a process.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, loadLibrary } from '../lib';
import { expectMatches, fixtures, inputsOf, model, ROOT } from './helpers/fixtures';

describe('operator libraries', () => {
  it('a model using torchvision::nms fails with ERR_UNSUPPORTED naming the operator and the fix', async () => {
    await expect(load(model('ops_nms').path)).rejects.toMatchObject({
      code: 'ERR_UNSUPPORTED',
      message: expect.stringMatching(/calls the operator torchvision::nms[\s\S]*loadLibrary/),
    });
  });

  it('after loadLibrary(torchvision\'s library) it loads and matches PyTorch', async () => {
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
