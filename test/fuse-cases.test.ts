// The fold on PyTorch-made edge cases and torchvision models: which pairs fold
// or are skipped (and why), folded parameters bit for bit against a correctly
// rounded float64 computation, and outputs against a float64 reference.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, ScriptModule, Tensor, TorchValue } from '../lib';
import { decode, FIXTURES, readTensorData, tmpDir } from './helpers/fixtures';

type Tree = Parameters<typeof decode>[0];
interface Ref { file: string; dtype: string; shape: number[] }
interface PairExpect { conv: string; norm: string; status: 'folded' | 'skipped'; reason: string | null }
interface Case {
  file: string; kind: string; dtype: string; note: string;
  inputs: Tree[]; output: Tree | null; output64: Tree;
  expect: { norms: number; pairs: PairExpect[] | null; foldable?: number };
  folded_params: Record<string, Tree>;
  extra_cases?: { method: string; inputs: Tree[]; output: Tree; output64: Tree }[];
}

const DIR = path.join(FIXTURES, 'fuse');
const cases: Record<string, Case> = JSON.parse(fs.readFileSync(path.join(DIR, 'manifest.json'), 'utf8')).cases;
const out = tmpDir('fuse-cases');

/** Fixture trees name files relative to the fuse folder. */
function inFuseDir(tree: Tree): Tree {
  if (tree === null || typeof tree !== 'object') return tree;
  if (Array.isArray(tree)) return tree.map(inFuseDir);
  if ('__tensor__' in tree) {
    const ref = tree.__tensor__ as unknown as Ref;
    return { __tensor__: { ...ref, file: path.join('fuse', ref.file) } } as unknown as Tree;
  }
  return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, inFuseDir(v)]));
}

const ref = (t: Tree): Ref => {
  const r = (inFuseDir(t) as unknown as { __tensor__: Ref }).__tensor__;
  return r;
};

function values(t: Tensor): number[] {
  return Array.from(t.toTypedArray() as ArrayLike<number>, Number);
}

/** Max |a - ref64| over elements; NaN where both are NaN counts as equal. */
function errorAgainst(actual: Tensor, ref64: Ref): number {
  const a = values(actual);
  const e = Array.from(readTensorData(ref64 as never) as Float64Array);
  let worst = 0;
  for (let i = 0; i < e.length; i++) {
    if (Number.isNaN(e[i]) && Number.isNaN(a[i])) continue;
    worst = Math.max(worst, Math.abs(a[i] - e[i]));
  }
  return worst;
}

/** The tensors of a method's result, depth first (a tensor, or a tuple/list of them). */
async function allTensors(m: ScriptModule, method: string, inputs: TorchValue[]): Promise<Tensor[]> {
  const out: Tensor[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v instanceof Tensor) out.push(v);
  };
  walk(await m.run(method, ...inputs));
  return out;
}

/** The tensor references of a fixture tree, in the same order. */
function allRefs(tree: Tree): Ref[] {
  const out: Ref[] = [];
  const walk = (t: Tree): void => {
    if (Array.isArray(t)) t.forEach(walk);
    else if (t && typeof t === 'object' && '__tensor__' in t) out.push(ref(t));
  };
  walk(tree);
  return out;
}

async function firstTensor(m: ScriptModule, method: string, inputs: TorchValue[]): Promise<Tensor> {
  let v = await m.run(method, ...inputs);
  while (Array.isArray(v)) v = v[0];
  return v as Tensor;
}

describe.each(Object.entries(cases))('%s', (name, c) => {
  it(c.note, async () => {
    const m = await load(path.join(DIR, c.file));
    const { module, report } = await m.fuse();
    // Which pairs, and what happened to each.
    expect(report.batchNorms.before, 'norms').toBe(c.expect.norms);
    if (c.expect.pairs) {
      expect(report.pairs.map((p) => `${p.conv}->${p.norm}`).sort())
        .toEqual(c.expect.pairs.map((p) => `${p.conv}->${p.norm}`).sort());
      for (const e of c.expect.pairs) {
        const got = report.pairs.find((p) => p.conv === e.conv && p.norm === e.norm)!;
        expect(got.status, `${e.conv}->${e.norm}: ${got.reason}`).toBe(e.status);
        if (e.reason) expect(got.reason?.toLowerCase()).toContain(e.reason.toLowerCase());
      }
    } else {
      expect(report.folded).toBe(c.expect.foldable);
    }
    expect(report.batchNorms.after).toBe(c.expect.norms - report.folded);
    // Every normalization that runs is accounted for: in a pair, or unpaired with a reason.
    const paired = new Set(report.pairs.map((p) => `${p.norm}|${p.normKind}`));
    expect(paired.size + report.unpaired.length, report.unpaired.map((u) => `${u.norm}: ${u.reason}`).join('\n')).toBe(c.expect.norms);
    for (const u of report.unpaired) expect(u.reason).toMatch(/^its input (comes from|is)/);
    // Folded norm modules are replaced by empty ones: their parameters and buffers are gone.
    const state = module.stateDict();
    // (A fold behind a rank guard keeps its norm for the original path.)
    const foldedModules = report.pairs.filter((p) => p.status === 'folded' && !p.rankGuard && p.normKind !== 'batch_norm' && p.norm).map((p) => p.norm);
    if (c.expect.pairs) expect(report.replaced).toEqual([...new Set(foldedModules)].sort());
    for (const norm of report.replaced) {
      expect(foldedModules).toContain(norm);
      expect(Object.keys(state).filter((k) => k.startsWith(`${norm}.`)), norm).toEqual([]);
      expect(Object.keys(m.stateDict()).some((k) => k.startsWith(`${norm}.`)), norm).toBe(true);
    }
    // A site copy leaves the module's own weight and bias as they were.
    for (const p of report.pairs.filter((q) => q.status === 'folded' && q.siteCopy)) {
      expect(p.siteCopy!.bytes).toBeGreaterThan(0);
      for (const [param, t] of Object.entries(m.stateDict())) {
        if (param.startsWith(`${p.conv}.`)) expect(values(state[param]), param).toEqual(values(t));
      }
    }
    // Folded parameters: bit for bit the correctly rounded float64 value.
    for (const [param, tree] of Object.entries(c.folded_params)) {
      const expected = readTensorData(ref(tree) as never);
      expect(state[param], param).toBeDefined();
      expect(Array.from(state[param].toTypedArray() as ArrayLike<number>), param).toEqual(Array.from(expected as ArrayLike<number>));
    }
    for (const [param, t] of Object.entries(state)) {
      if (!t.dtype.startsWith('float') && t.dtype !== 'bfloat16') continue;
      const before = m.stateDict()[param];
      const finiteBefore = !before || values(before).every(Number.isFinite);
      if (finiteBefore && t.dtype !== 'float16' && t.dtype !== 'bfloat16') expect(values(t).every(Number.isFinite), param).toBe(true);
    }
    // Outputs: no worse than twice the unfused module's own error against float64.
    const runs = [{ method: 'forward', inputs: c.inputs, output: c.output, output64: c.output64 }, ...(c.extra_cases ?? [])];
    for (const r of runs) {
      if (r.output === null) continue;  // float16: no CPU kernels in this libtorch
      const inputs = r.inputs.map((t) => decode(inFuseDir(t)));
      // Every output tensor (a backbone returns a tuple of feature maps), in order.
      const [orig, fused, refs] = [await allTensors(m, r.method, inputs), await allTensors(module, r.method, inputs), allRefs(r.output64)];
      expect(fused.length).toBe(refs.length);
      expect(orig.length).toBe(refs.length);
      refs.forEach((ref64, i) => {
        const [eOrig, eFused] = [errorAgainst(orig[i], ref64), errorAgainst(fused[i], ref64)];
        expect(eFused, `${r.method} output ${i}: fused ${eFused} vs unfused ${eOrig}`).toBeLessThanOrEqual(2 * eOrig + 1e-6);
      });
    }
    // The result saves and reloads with the same outputs.
    const file = path.join(out, `${name}.pt`);
    await module.save(file);
    const again = await load(file);
    if (c.output !== null) {
      const inputs = c.inputs.map((t) => decode(inFuseDir(t)));
      expect(values(await firstTensor(again, 'forward', inputs))).toEqual(values(await firstTensor(module, 'forward', inputs)));
    }
    fs.rmSync(file);
  });
});
