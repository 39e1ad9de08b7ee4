// save({ extraFiles }) / readExtraFiles(): the same records PyTorch's _extra_files writes and reads;
// fuse({ signal }): an AbortSignal stops the work and rejects with its reason.
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { load, readExtraFiles } from '../lib';
import { badFile, model, PYTHON, tmpDir } from './helpers/fixtures';

const dir = tmpDir('extra-files');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const py = (code: string, ...args: string[]) => execFileSync(PYTHON, ['-c', code, ...args], { encoding: 'utf8' });

describe('extra files', () => {
  it('PyTorch reads what save({ extraFiles }) stores, byte for byte', async () => {
    const m = await load(model('convbn_scripted').path);
    const file = path.join(dir, 'with-extra.pt');
    const text = JSON.stringify({ note: 'ünïcode ✓', n: [1, 2, 3] });
    await m.save(file, { extraFiles: { 'torchfold.json': text, 'notes/readme.txt': 'line 1\nline 2' } });
    const out = py(`import sys, json, torch
f = {'torchfold.json': '', 'notes/readme.txt': ''}
torch.jit.load(sys.argv[1], _extra_files=f)
print(json.dumps({k: v.decode('utf8') for k, v in f.items()}))`, file);
    expect(JSON.parse(out)).toEqual({ 'torchfold.json': text, 'notes/readme.txt': 'line 1\nline 2' });
    await m.dispose();
  });

  it('readExtraFiles reads what torch.jit.save(_extra_files=...) wrote, without the names it lacks', async () => {
    const file = path.join(dir, 'from-pytorch.pt');
    py(`import sys, torch
m = torch.jit.load(sys.argv[1])
torch.jit.save(m, sys.argv[2], _extra_files={'meta.json': '{"from": "pytorch"}'})`, model('convbn_traced').path, file);
    expect(await readExtraFiles(file, ['meta.json', 'absent.txt'])).toEqual({ 'meta.json': '{"from": "pytorch"}' });
    expect(await readExtraFiles(model('convbn_traced').path, ['meta.json'])).toEqual({});
  });

  it('bad files and names get the same errors as load()', async () => {
    for (const bad of ['truncated', 'state_dict', 'random_bytes']) {
      const loadError = await load(badFile(bad)).catch((e) => e);
      const readError = await readExtraFiles(badFile(bad), ['x']).catch((e) => e);
      expect(readError.code).toBe(loadError.code);
    }
    await expect(readExtraFiles(path.join(dir, 'missing.pt'), ['x'])).rejects.toMatchObject({ code: 'ERR_FILE_NOT_FOUND' });
    expect(() => readExtraFiles(model('convbn_traced').path, ['../escape'])).toThrow(TypeError);
    const m = await load(model('convbn_scripted').path);
    expect(() => m.save(path.join(dir, 'x.pt'), { extraFiles: { '/abs': 'x' } })).toThrow(TypeError);
    expect(() => m.save(path.join(dir, 'x.pt'), { extraFiles: { ok: 1 as unknown as string } })).toThrow(/extraFiles\['ok'\]/);
    expect(() => m.save(path.join(dir, 'x.pt'), { extra: {} } as never)).toThrow(RangeError);
    await m.dispose();
  });
});

describe('fuse({ signal })', () => {
  it('an aborted signal rejects at once with its reason', async () => {
    const m = await load(model('convbn_scripted').path);
    const controller = new AbortController();
    const reason = new Error('stop now');
    controller.abort(reason);
    await expect(m.fuse({ signal: controller.signal })).rejects.toBe(reason);
    expect(() => m.fuse({ signal: {} as AbortSignal })).toThrow(TypeError);
    await m.dispose();
  });

  it('aborting during the benchmark stops it between calls and rejects with an AbortError', async () => {
    const f = model('resnet18_traced');
    const m = await load(f.path);
    const shape = (f.cases[0].inputs[0] as { __tensor__: { shape: number[] } }).__tensor__.shape;
    const controller = new AbortController();
    const t0 = performance.now();
    const p = m.fuse({ benchmark: { inputs: [shape], iterations: 100000, warmup: 0 }, signal: controller.signal });
    setTimeout(() => controller.abort(), 1500);
    await expect(p).rejects.toMatchObject({ name: 'AbortError' });
    // 100000 iterations would take hours: it stopped soon after the abort.
    expect(performance.now() - t0).toBeLessThan(30_000);
    // The module still works afterwards.
    const again = await m.fuse();
    expect(again.report.folded).toBeGreaterThan(0);
    await again.module.dispose();
    await m.dispose();
  }, 60_000);
});
