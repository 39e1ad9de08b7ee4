// save(): reload gives the same outputs, PyTorch can load the file, writes are atomic.
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { load } from '../lib';
import { checkInPyTorch, expectMatches, inputsOf, model, tmpDir } from './helpers/fixtures';

const dir = tmpDir('save');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('save', () => {
  for (const name of ['convbn_scripted', 'convbn_traced', 'multi_method', 'ivalues', 'resnet18_traced']) {
    it(`${name}: save -> reload gives PyTorch's outputs, and PyTorch loads the saved file`, async () => {
      const f = model(name);
      const m = await load(f.path);
      const file = path.join(dir, `${name}.pt`);
      await m.save(file);
      const again = await load(file);
      expect([...again.methods].sort()).toEqual(f.methods);
      for (const c of f.cases) {
        again.train(c.mode === 'train');
        expectMatches(await again.run(c.method, ...inputsOf(c)), c.output, c.atol ?? 1e-5);
      }
      const py = checkInPyTorch(file, name);
      expect(py.error).toBeUndefined();
      expect(py).toMatchObject({ ok: true, cases: f.cases.length, methods: f.methods });
    });
  }

  it('a mode change is saved: an eval()-ed trainable module reloads in eval mode', async () => {
    const m = await load(model('trainable').path);
    const file = path.join(dir, 'trainable-eval.pt');
    await m.eval().save(file);
    expect((await load(file)).training).toBe(false);
  });

  it('replaces an existing file whole and leaves no temporary files', async () => {
    const file = path.join(dir, 'replace.pt');
    fs.writeFileSync(file, 'old contents');
    const m = await load(model('convbn_scripted').path);
    await m.save(file);
    expect(fs.readFileSync(file).subarray(0, 2).toString()).toBe('PK');
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('saving the same module twice gives byte-identical files', async () => {
    const m = await load(model('convbn_scripted').path);
    fs.mkdirSync(path.join(dir, 'x'));
    fs.mkdirSync(path.join(dir, 'y'));
    await m.save(path.join(dir, 'x', 'same.pt'));
    await m.save(path.join(dir, 'y', 'same.pt'));
    expect(fs.readFileSync(path.join(dir, 'x', 'same.pt')).equals(fs.readFileSync(path.join(dir, 'y', 'same.pt')))).toBe(true);
  });

  it('a failed save leaves the existing file untouched', async () => {
    const sub = path.join(dir, 'ro');
    fs.mkdirSync(sub);
    const file = path.join(sub, 'keep.pt');
    fs.writeFileSync(file, 'precious');
    const m = await load(model('convbn_scripted').path);
    await expect(m.save(path.join(sub, 'missing-dir', 'x.pt'))).rejects.toMatchObject({ code: 'ERR_FILE_NOT_FOUND' });
    await expect(m.save(sub)).rejects.toMatchObject({ code: 'ERR_NOT_A_FILE' });
    expect(fs.readFileSync(file, 'utf8')).toBe('precious');
    expect(fs.readdirSync(sub)).toEqual(['keep.pt']);
  });

  it('concurrent saves to one path never leave a torn file', async () => {
    const file = path.join(dir, 'race.pt');
    const a = await load(model('convbn_scripted').path);
    const b = await load(model('multi_method').path);
    await Promise.all([a.save(file), b.save(file), a.save(file), b.save(file)]);
    const m = await load(file);
    expect(['forward', 'embed,forward']).toContain([...m.methods].sort().join(','));
    expect(fs.readdirSync(dir).filter((f) => f.includes('race.pt.tmp'))).toEqual([]);
  });

  it('clone() is independent and saves the same model; to("cpu") copies', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    const c = await m.clone();
    await m.dispose();
    expectMatches(await c.forward(...inputsOf(f.cases[0])), f.cases[0].output);
    const moved = await c.to('cpu');
    expect(moved.device).toBe('cpu');
    expectMatches(await moved.forward(...inputsOf(f.cases[0])), f.cases[0].output);
    const file = path.join(dir, 'clone.pt');
    await moved.save(file);
    expect(checkInPyTorch(file, 'convbn_scripted').ok).toBe(true);
  });

  it('save(path) checks its argument', async () => {
    const m = await load(model('convbn_scripted').path);
    expect(() => m.save(undefined as never)).toThrow(TypeError);
    expect(() => m.save('')).toThrow(TypeError);
  });
});
