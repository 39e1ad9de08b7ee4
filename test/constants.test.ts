// fuse({ constants: true }) on PyTorch-made cases (scripts/make_transform_fixtures.py,
// section "constants"): which mul/div/add/sub-by-a-constant ops after a conv/linear
// are absorbed or skipped (and why), folded parameters bit for bit against the
// float64 chain rounded once, outputs against an eager float64 reference, the
// arithmetic nodes that disappear from the graph, and a save/reload round trip.
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { load, ScriptModule, Tensor, TorchValue } from '../lib';
import { decode, FIXTURES, readTensorData, tmpDir } from './helpers/fixtures';
import { within } from './helpers/subdir';

type Tree = Parameters<typeof decode>[0];
interface Ref { file: string; dtype: string; shape: number[] }
interface AbsorbExpect { conv: string; op: 'mul' | 'div' | 'add' | 'sub'; status: 'folded' | 'skipped'; reason: string | null }
interface ConstCase {
  file: string; kind: 'scripted' | 'traced'; dtype: string; note: string;
  inputs: Tree[]; output: Tree; output64: Tree;
  expect: { absorbed: AbsorbExpect[]; norms_folded: number };
  folded_params: Record<string, Tree>;
}

const SUB = 'transform';
const DIR = path.join(FIXTURES, SUB);
const cases: Record<string, ConstCase> = JSON.parse(fs.readFileSync(path.join(DIR, 'manifest.json'), 'utf8')).constants;
const out = tmpDir('constants');
afterAll(() => fs.rmSync(out, { recursive: true, force: true }));

const inDir = (tree: Tree): Tree => within(SUB, tree) as Tree;

const ref = (t: Tree): Ref => (inDir(t) as unknown as { __tensor__: Ref }).__tensor__;
const inputsOf = (c: ConstCase): TorchValue[] => c.inputs.map((t) => decode(inDir(t)));

function values(t: Tensor): number[] {
  return Array.from(t.toTypedArray() as ArrayLike<number>, Number);
}

/** Max |a - ref64| over elements; NaN where both are NaN counts as equal. */
function errorAgainst(actual: Tensor, ref64: Ref): number {
  const a = values(actual);
  const e = Array.from(readTensorData(ref64 as never) as Float64Array);
  expect(a.length).toBe(e.length);
  let worst = 0;
  for (let i = 0; i < e.length; i++) {
    if (Number.isNaN(e[i]) && Number.isNaN(a[i])) continue;
    const d = Math.abs(a[i] - e[i]);
    worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
  }
  return worst;
}

async function firstTensor(m: ScriptModule, inputs: TorchValue[]): Promise<Tensor> {
  let v = await m.forward(...inputs);
  while (Array.isArray(v)) v = v[0];
  return v as Tensor;
}

/**
 * Tensor-valued mul/div/add/sub nodes in the inlined forward graph. Only nodes
 * whose output is a Tensor count: a scripted BatchNorm's forward also holds int
 * and float arithmetic (size products, the momentum factor) that vanishes with
 * the BN when it folds, and that is not what constant absorption removes.
 */
function tensorArithmetic(m: ScriptModule): number {
  return m.graph('forward', { inlined: true }).split('\n')
    .filter((l) => /: Tensor = aten::(mul|div|add|sub)\(/.test(l)).length;
}

const key = (e: { conv: string; op: string }) => `${e.conv}:${e.op}`;

describe.each(Object.entries(cases))('%s', (name, c) => {
  it(c.note, async () => {
    const m = await load(path.join(DIR, c.file));
    const { module, report } = await m.fuse({ constants: true });

    // Which ops were absorbed or skipped, and why.
    const expected = c.expect.absorbed;
    expect(new Set(expected.map(key)).size, 'manifest keys are unique').toBe(expected.length);
    expect(report.absorbed.map(key).sort(), JSON.stringify(report.absorbed)).toEqual(expected.map(key).sort());
    for (const e of expected) {
      const got = report.absorbed.find((a) => key(a) === key(e))!;
      expect(got.status, `${key(e)}: ${got.reason}`).toBe(e.status);
      if (e.reason) expect(got.reason?.toLowerCase(), key(e)).toContain(e.reason.toLowerCase());
    }
    expect(report.folded, 'BatchNorms folded').toBe(c.expect.norms_folded);

    // Folded parameters: bit for bit the float64 chain rounded once.
    const state = module.stateDict();
    for (const [param, tree] of Object.entries(c.folded_params)) {
      expect(state[param], param).toBeDefined();
      expect(Array.from(state[param].toTypedArray() as ArrayLike<number>), param)
        .toEqual(Array.from(readTensorData(ref(tree) as never) as ArrayLike<number>));
    }

    // Outputs: no worse than twice the original module's own error against float64;
    // identical when nothing changed.
    const inputs = inputsOf(c);
    const [orig, fused] = [await firstTensor(m, inputs), await firstTensor(module, inputs)];
    expect(fused.dtype, 'output dtype').toBe(orig.dtype);
    expect(fused.shape, 'output shape').toEqual(orig.shape);
    const [eOrig, eFused] = [errorAgainst(orig, ref(c.output64)), errorAgainst(fused, ref(c.output64))];
    expect(eFused, `fused ${eFused} vs original ${eOrig}`).toBeLessThanOrEqual(2 * eOrig + 1e-6);
    const foldedOps = expected.filter((e) => e.status === 'folded').length;
    if (foldedOps === 0 && c.expect.norms_folded === 0) expect(values(fused)).toEqual(values(orig));

    // The absorbed ops are gone from the graph, and only those; an op folded behind a rank
    // guard stays on the original path the guard keeps for inputs of other ranks.
    const reportedFolded = report.absorbed.filter((a) => a.status === 'folded').length;
    const guarded = report.absorbed.filter((a) => a.status === 'folded' && a.rankGuard);
    expect(reportedFolded, 'folded ops: report vs manifest').toBe(foldedOps);
    expect(tensorArithmetic(m) - tensorArithmetic(module), 'tensor mul/div/add/sub nodes removed').toBe(reportedFolded - guarded.length);
    if (guarded.length) {
      // On an unbatched input the original path runs: bit for bit the original module's output.
      const x = inputs[0] as Tensor;
      expect(guarded[0].rankGuard!.rank).toBe(x.shape.length);
      const per = x.shape.slice(1).reduce((p, d) => p * d, 1);
      const unbatched = Tensor.from((x.toTypedArray() as Float32Array).slice(0, per), x.shape.slice(1));
      const [a, b] = [await firstTensor(m, [unbatched]), await firstTensor(module, [unbatched])];
      expect(b.shape).toEqual(a.shape);
      expect(values(b)).toEqual(values(a));
      expect(guarded[0].rankGuard!.bytes).toBeGreaterThan(0);
    }

    // The result saves and reloads with the same outputs.
    const file = path.join(out, `${name}.pt`);
    await module.save(file);
    const again = await load(file);
    expect(values(await firstTensor(again, inputs))).toEqual(values(fused));
    fs.rmSync(file);
  });
});

describe('fuse({ constants }) options', () => {
  const file = path.join(DIR, cases.mul_channel_buffer.file);

  it('a non-boolean constants option is an argument error, thrown synchronously', async () => {
    const m = await load(file);
    expect(() => m.fuse({ constants: 'yes' as never })).toThrow(TypeError);
    expect(() => m.fuse({ constants: 'yes' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });

  it('without constants: true nothing is absorbed and the constant op stays', async () => {
    const m = await load(file);
    const inputs = inputsOf(cases.mul_channel_buffer);
    const before = tensorArithmetic(m);
    expect(before).toBeGreaterThan(0);
    for (const options of [undefined, { constants: false }]) {
      const { module, report } = await m.fuse(options);
      expect(report.absorbed).toEqual([]);
      expect(report.folded).toBe(0);
      expect(tensorArithmetic(module)).toBe(before);
      const [a, b] = [module.stateDict(), m.stateDict()];
      expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
      for (const k of Object.keys(b)) expect(values(a[k]), k).toEqual(values(b[k]));
      expect(values(await firstTensor(module, inputs))).toEqual(values(await firstTensor(m, inputs)));
    }
    // The same model with constants: true does absorb it (so the difference is the option).
    const { report } = await m.fuse({ constants: true });
    expect(report.absorbed.map((a) => a.status)).toEqual(['folded']);
  });
});
