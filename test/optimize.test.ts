// fuse({ optimize }): candidates (the input, the fused module, frozen, frozen +
// optimize_for_inference, and on the CPU frozen + oneDNN convolutions,
// channels_last, oneDNN Graph fusion, both, NNC) validated against the input
// module, checked for kept methods and a save/load round trip, timed
// interleaved; the fastest eligible one is returned. Models and float64
// references come from PyTorch (scripts/make_transform_fixtures.py), which also
// recorded that optimize_for_inference's result cannot be saved as it is: it is
// saved as its portable form plus a recipe (test/recipe.test.ts).
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, readExtraFiles, ScriptModule, Tensor } from '../lib';
import { native } from '../lib/binding';
import { nativeHandle } from '../lib/module';
import { RECIPE_FILE } from '../lib/recipe';
import { checkInPyTorch, decode, FIXTURES, model, readTensorData, tmpDir } from './helpers/fixtures';
import { manifestOf, within } from './helpers/subdir';

interface Attempt { preserved_attrs: string[] | null; save_reload: { ok: boolean; error: string | null } }
interface OptCase {
  file: string; input_shapes: number[][]; inputs: unknown[]; output64: unknown;
  extra_cases?: { method: string; inputs: unknown[]; output64: unknown }[];
  attempts: Attempt[];
}
const cases = manifestOf<{ optimize: Record<string, OptCase> }>('transform').optimize;
const out = tmpDir('optimize');

function maxRelTo64(t: Tensor, ref: unknown): number {
  const r = (within('transform', ref) as { __tensor__: { file: string; dtype: 'float64'; shape: number[] } }).__tensor__;
  const e = readTensorData(r) as Float64Array, a = t.toTypedArray() as Float32Array;
  let scale = 0, worst = 0;
  for (let i = 0; i < e.length; i++) scale = Math.max(scale, Math.abs(e[i]));
  for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]));
  return worst / scale;
}

describe.each(Object.entries(cases))('optimize %s', (name, c) => {
  it('keeps the fastest valid candidate, never one slower than the input in the same run', async () => {
    const m = await load(path.join(FIXTURES, 'transform', c.file));
    const { module, report } = await m.fuse({ optimize: { inputs: c.input_shapes, iterations: 5, warmup: 1 } });
    const o = report.optimize!;
    expect(o.candidates.map((k) => k.name)).toEqual(['input', 'fused', 'frozen', 'frozen+optimized', 'frozen+onednn',
      'frozen+channels_last', 'frozen+llga', 'frozen+channels_last+llga', 'frozen+nnc']);
    const llgaMissing = native().fusers().llga;
    for (const k of o.candidates.filter((x) => x.name.endsWith('+llga'))) {
      if (llgaMissing) expect(k.reason).toMatch(/oneDNN Graph fusion is not available/);
      else expect(k.runTimeSteps).toEqual(['llga']);
    }
    // Every candidate that was built is checked, and timed unless it failed on the sample.
    for (const k of o.candidates.slice(2)) {
      if (k.validation) expect(k.latency, k.name).toBeDefined();
      else expect(k.reason, k.name).toBeDefined();
    }
    // The oneDNN rewrite of the frozen module is a plain aten op: it always saves (or was not built: no conv to rewrite).
    const onednn = o.candidates.find((k) => k.name === 'frozen+onednn')!;
    if (onednn.note) expect(onednn.saveable, onednn.saveError).toBe(true);
    else expect(onednn.reason).toMatch(/no convolution to rewrite/);
    const chosen = o.candidates.find((k) => k.name === o.chosen)!;
    expect(chosen.eligible).toBe(true);
    // The choice is the highest paired speedup (input time / candidate time in the same round, median
    // over rounds); the input's is 1 by definition, so the choice is never slower than the input.
    const input = o.candidates[0];
    expect(input.speedup).toBe(1);
    for (const k of o.candidates.filter((x) => x.eligible)) {
      expect(k.speedup!, k.name).toBeLessThanOrEqual(chosen.speedup!);
    }
    expect(chosen.speedup!).toBeGreaterThanOrEqual(1);
    // PyTorch cannot save optimize_for_inference's result as it is; torchfold saves its
    // portable form with a recipe, so the candidate is saveable and eligible on its merits.
    const ofi = o.candidates.find((k) => k.name === 'frozen+optimized')!;
    expect(ofi.saveable).toBe(true);
    expect(ofi.runTimeSteps).toEqual(['optimize_for_inference']);
    if (!c.attempts.every((a) => a.save_reload.ok)) expect(ofi.latency, 'timed side by side').toBeDefined();
    // Every method kept, outputs right against float64, and the result saves and reloads.
    expect([...module.methods].sort()).toEqual([...m.methods].sort());
    const x = c.inputs.map((t) => decode(within('transform', t)));
    expect(maxRelTo64(await module.forward(...x) as Tensor, c.output64)).toBeLessThan(1e-4);
    for (const e of c.extra_cases ?? []) {
      const xs = e.inputs.map((t) => decode(within('transform', t)));
      expect(maxRelTo64(await module.run(e.method, ...xs) as Tensor, e.output64), e.method).toBeLessThan(1e-4);
    }
    const file = path.join(out, `${name}.pt`);
    await module.save(file);
    // A chosen candidate with run-time steps is saved with its recipe, and load() redoes them.
    const recipe = (await readExtraFiles(file, [RECIPE_FILE]))[RECIPE_FILE];
    expect(Boolean(recipe), o.chosen).toBe(Boolean(chosen.runTimeSteps?.length));
    const again = await load(file);
    if (recipe) expect(again.recipe, JSON.stringify(again.recipe)).toMatchObject({ candidate: o.chosen, applied: true });
    expect(Array.from((await again.forward(...x) as Tensor).toTypedArray() as Float32Array))
      .toEqual(Array.from((await module.forward(...x) as Tensor).toTypedArray() as Float32Array));
    fs.rmSync(file);
  }, 240_000);
});

describe('optimize options', () => {
  const c = cases.exported_bn;
  it('optimize_for_inference, which cannot be saved as it is, is eligible: its recipe makes it saveable', async () => {
    const m = await load(path.join(FIXTURES, 'transform', c.file));
    const { report } = await m.fuse({ optimize: { inputs: c.input_shapes, iterations: 3, warmup: 1 } });
    const ofi = report.optimize!.candidates.find((k) => k.name === 'frozen+optimized')!;
    expect(c.attempts.every((a) => a.save_reload.ok), 'PyTorch could not save it').toBe(false);
    expect(ofi).toMatchObject({ eligible: true, saveable: true, runTimeSteps: ['optimize_for_inference'] });
    expect(ofi.latency).toBeDefined();
  });
  it('needs sample inputs, eval mode and a real options object', async () => {
    const m = await load(path.join(FIXTURES, 'transform', c.file));
    expect(() => m.fuse({ optimize: true })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => m.fuse({ optimize: { inputs: c.input_shapes, bogus: 1 } as never })).toThrow(/bogus/);
    m.train();
    const { report } = await m.fuse({ optimize: { inputs: c.input_shapes, iterations: 2, warmup: 0 }, treatTrainingAsEval: true });
    const frozen = report.optimize!.candidates.filter((k) => k.name.startsWith('frozen'));
    for (const k of frozen) expect(k.reason).toMatch(/eval mode|is not available: this libtorch/);
    expect(frozen.filter((k) => /eval mode/.test(k.reason!)).length).toBeGreaterThanOrEqual(4);
  });
});

describe('the frozen+onednn candidate', () => {
  for (const name of ['resnet18_traced', 'resnet18_scripted', 'multi_method']) {
    it(`${name}: every 2-d conv runs on oneDNN, and PyTorch loads the saved module and reproduces the model`, async () => {
      const m = await load(model(name).path);
      const frozen = await nativeHandle(m).freeze({ optimize: false });
      const v = await frozen.module.onednn();
      expect(v.saveable, v.saveError).toBe(true);
      expect(v.rewritten).toBeGreaterThan(0);
      expect(v.kept, v.keptReasons.join('; ')).toBe(0);
      const onednn = new ScriptModule(v.module);
      expect(onednn.graph('forward')).toContain('aten::mkldnn_convolution');
      const file = path.join(out, `${name}-onednn.pt`);
      await onednn.save(file);
      const py = checkInPyTorch(file, name);
      expect(py.error).toBeUndefined();
      expect(py.ok).toBe(true);
      await onednn.dispose();
      frozen.module.dispose();
      await m.dispose();
    }, 60_000);
  }
});
