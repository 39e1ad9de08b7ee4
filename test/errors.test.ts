// Every error a user can cause has a stable code and a message that says what to do.
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { cuda, getNumThreads, load, setNumThreads, Tensor, TorchfoldError } from '../lib';
import { spawnSync } from 'child_process';
import { badFile, inputsOf, model, ROOT, tmpDir } from './helpers/fixtures';

const dir = tmpDir('errors');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function loadError(file: string, options?: object): Promise<TorchfoldError> {
  try {
    await load(file, options);
  } catch (e) {
    expect(e).toBeInstanceOf(TorchfoldError);
    return e as TorchfoldError;
  }
  throw new Error(`load(${file}) did not fail`);
}

describe('load errors', () => {
  it('ERR_FILE_NOT_FOUND for a missing file or a path through a file', async () => {
    const e = await loadError(path.join(dir, 'nope.pt'));
    expect(e.code).toBe('ERR_FILE_NOT_FOUND');
    expect(e.message).toContain('nope.pt');
    expect((await loadError(path.join(model('convbn_scripted').path, 'x.pt'))).code).toBe('ERR_FILE_NOT_FOUND');
  });

  it('ERR_NOT_A_FILE for a folder named like a model', async () => {
    const folder = path.join(dir, 'x.pt');
    fs.mkdirSync(folder);
    expect((await loadError(folder)).code).toBe('ERR_NOT_A_FILE');
  });

  it('ERR_FILE_UNREADABLE for a file without read permission', async (ctx) => {
    const file = path.join(dir, 'locked.pt');
    fs.copyFileSync(model('convbn_scripted').path, file);
    fs.chmodSync(file, 0o000);
    if (process.getuid?.() !== 0) {
      expect((await loadError(file)).code).toBe('ERR_FILE_UNREADABLE');
      return;
    }
    // Root reads anything: try as 'nobody' in a child process instead, where it can see the package.
    const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))}).getNumThreads()`],
      { uid: 65534, gid: 65534, encoding: 'utf8' });
    ctx.skip(probe.status !== 0, 'running as root and user nobody cannot read this checkout');
    const script = `require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))}).load(process.argv[1])
      .then(() => console.log('loaded'), (e) => console.log(e.code))`;
    const r = spawnSync(process.execPath, ['-e', script, file], { uid: 65534, gid: 65534, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ERR_FILE_UNREADABLE');
  });

  it('ERR_NOT_TORCHSCRIPT for an empty file, random bytes, a zip without code, a truncated archive', async () => {
    const empty = path.join(dir, 'empty.pt');
    fs.writeFileSync(empty, '');
    expect(await loadError(empty)).toMatchObject({ code: 'ERR_NOT_TORCHSCRIPT', message: expect.stringMatching(/empty/) });
    for (const name of ['random_bytes', 'zip_without_code', 'truncated']) {
      const e = await loadError(badFile(name));
      expect(e.code, name).toBe('ERR_NOT_TORCHSCRIPT');
      expect(e.message, name).toMatch(/torch\.jit\.script/);
    }
  });

  it('a state_dict saved by torch.save says so and how to export TorchScript', async () => {
    for (const name of ['state_dict', 'legacy_pickle']) {
      const e = await loadError(badFile(name));
      expect(e.code, name).toBe('ERR_NOT_TORCHSCRIPT');
      expect(e.message, name).toMatch(/torch\.save/);
      expect(e.message, name).toMatch(/torch\.jit\.script\(model\).*torch\.jit\.trace.*save/);
    }
  });

  it('ERR_DEVICE_UNAVAILABLE for a CUDA device that is not there', async () => {
    const device = cuda.isAvailable() ? `cuda:${cuda.deviceCount()}` : 'cuda';
    const e = await loadError(model('convbn_scripted').path, { device });
    expect(e.code).toBe('ERR_DEVICE_UNAVAILABLE');
    expect(e.message).toContain(device);
  });

  it('bad arguments throw synchronously, with the Expected ... but received ... wording', () => {
    expect(() => load(42 as never)).toThrow(TypeError);
    expect(() => load('')).toThrow(TypeError);
    expect(() => load('m.pt', 'cpu' as never)).toThrow(TypeError);
    expect(() => load('m.pt', { device: 'gpu' })).toThrow(RangeError);
    expect(() => load('m.pt', { device: 'cuda:x' })).toThrow(RangeError);
    expect(() => load('m.pt', { devise: 'cpu' } as never)).toThrow(/devise/);
    expect(() => load('m.pt', { device: 'cuda:64' })).toThrow(RangeError); // would wrap libtorch's 8-bit index
    expect(() => load('m.pt\0.json')).toThrow(/NUL/);
    try {
      load('m.pt', { device: 'gpu' });
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_INVALID_ARG' });
      expect((e as Error).message).toBe("Expected 'cpu', 'cuda' or 'cuda:N' for options.device but received 'gpu'");
    }
  });

  it('rejections carry the caller\'s stack', async () => {
    const e = await loadError(path.join(dir, 'nope.pt'));
    expect(e.stack).toMatch(/^TorchfoldError \[ERR_FILE_NOT_FOUND\]: No such file/);
    expect(e.stack).toContain('errors.test.ts');
  });
});

describe('run errors', () => {
  it('ERR_METHOD_NOT_FOUND for a method the module does not have', async () => {
    const m = await load(model('convbn_scripted').path);
    await expect(m.run('nope')).rejects.toMatchObject({ code: 'ERR_METHOD_NOT_FOUND', message: expect.stringContaining("'nope'") });
    expect(() => m.graph('nope')).toThrow(expect.objectContaining({ code: 'ERR_METHOD_NOT_FOUND' }));
  });

  it('ERR_TORCH carries libtorch\'s message for a failure inside forward', async () => {
    const m = await load(model('convbn_scripted').path);
    const wrong = Tensor.from(new Float32Array(2 * 5 * 4 * 4), [2, 5, 4, 4]); // 5 channels, conv wants 3
    const e = (await m.forward(wrong).then(() => undefined, (x: unknown) => x)) as TorchfoldError;
    expect(e).toBeInstanceOf(TorchfoldError);
    expect(e.code).toBe('ERR_TORCH');
    expect(e.message).toMatch(/channels/);
    expect(e.message).not.toMatch(/frame #\d/); // no C++ backtrace
    // the module still works afterwards
    const f = model('convbn_scripted');
    await expect(m.forward(...inputsOf(f.cases[0]))).resolves.toBeInstanceOf(Tensor);
  });

  it('ERR_INVALID_ARG (rejected) for a Tensor where the schema wants something else', async () => {
    const m = await load(model('ivalues').path);
    await expect(m.run('ints', Tensor.from(new Int32Array(1)))).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });

  it('ERR_UNSUPPORTED for results JS cannot hold: a TorchScript class, a complex tensor', async () => {
    const m = await load(model('ivalues').path);
    await expect(m.run('pair')).rejects.toMatchObject({
      code: 'ERR_UNSUPPORTED', message: expect.stringMatching(/Pair/),
    });
    const c = (await m.run('as_complex', Tensor.from(new Float32Array([1, 2, 3, 4]), [2, 2]))) as Tensor;
    expect(c.dtype).toBe('complexfloat');
    expect(() => c.toTypedArray()).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));
  });

  it('ERR_IO when the file cannot be written (the folder exists but refuses files)', async () => {
    const m = await load(model('convbn_scripted').path);
    await expect(m.save('/proc/torchfold-cannot-write.pt')).rejects.toMatchObject({
      code: 'ERR_IO', message: expect.stringMatching(/Cannot save to \/proc\/torchfold-cannot-write\.pt/),
    });
  });

  it('ERR_BUSY when train()/eval() would race a call in flight', async () => {
    const m = await load(model('resnet18_scripted').path);
    const x = inputsOf(model('resnet18_scripted').cases[0]);
    const p = m.forward(...x);
    expect(() => m.eval()).toThrow(expect.objectContaining({ code: 'ERR_BUSY' }));
    await p;
    expect(() => m.eval()).not.toThrow();
  });

  it('ERR_INVALID_ARG for toTypedArray of a CUDA tensor is covered by cuda.test.ts; unsupported options here', () => {
    expect(() => setNumThreads(0)).toThrow(RangeError);
    expect(() => setNumThreads(1.5)).toThrow(RangeError);
    expect(getNumThreads()).toBeGreaterThanOrEqual(1);
  });
});
