// fuse()/inspect() on the base fixtures: structure, numbers against PyTorch,
// the caller's module untouched, save/reload in torchfold and in PyTorch.
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { load, Tensor } from '../lib';
import { checkInPyTorch, expectMatches, inputsOf, model, tmpDir } from './helpers/fixtures';

const dir = tmpDir('fuse-basic');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const FOLDABLE: Record<string, number> = {
  convbn_scripted: 2, convbn_traced: 2, multi_method: 1, resnet18_scripted: 20, resnet18_traced: 20,
  mobilenet_v2_traced: 52,
};

describe('fuse on real models', () => {
  for (const [name, pairs] of Object.entries(FOLDABLE)) {
    it(`${name}: folds all ${pairs} pairs, leaves no batch_norm, matches PyTorch, saves and reloads`, async () => {
      const f = model(name);
      const m = await load(f.path);
      const { module, report } = await m.fuse();
      expect(report.pairs).toHaveLength(pairs);
      expect(report.folded).toBe(pairs);
      expect(report.batchNorms).toEqual({ before: pairs, after: 0 });
      for (const method of module.methods) expect(module.graph(method, { inlined: true })).not.toContain('aten::batch_norm');
      expect(m.graph('forward', { inlined: true })).toContain('aten::batch_norm'); // the original is untouched
      for (const c of f.cases) {
        expectMatches(await module.run(c.method, ...inputsOf(c)), c.output, Math.max(c.atol ?? 1e-5, 2e-5));
        expectMatches(await m.run(c.method, ...inputsOf(c)), c.output, c.atol ?? 1e-5);
      }
      expect([...module.methods].sort()).toEqual([...m.methods].sort());
      expect(module.namedModules().map((x) => x.path)).toEqual(m.namedModules().map((x) => x.path));
      const file = path.join(dir, `${name}.pt`);
      await module.save(file);
      const again = await load(file);
      expect((await again.inspect()).folded).toBe(0);
      const py = checkInPyTorch(file, name);
      expect(py.error).toBeUndefined();
      expect(py.ok).toBe(true);
    });
  }

  it('inspect() is the same analysis and changes nothing', async () => {
    const m = await load(model('resnet18_scripted').path);
    const before = m.graph('forward', { inlined: true });
    const report = await m.inspect();
    expect(report.folded).toBe(20);
    expect(report.batchNorms).toEqual({ before: 20, after: 0 });
    expect(m.graph('forward', { inlined: true })).toBe(before);
    const { report: real } = await m.fuse();
    expect(real.pairs.map(({ conv, norm, status }) => ({ conv, norm, status })))
      .toEqual(report.pairs.map(({ conv, norm, status }) => ({ conv, norm, status })));
  });

  it('a pair reached from forward and from _forward_impl is listed once, with both methods', async () => {
    const report = await (await load(model('resnet18_scripted').path)).inspect();
    expect(report.pairs[0]).toMatchObject({ conv: 'conv1', norm: 'bn1', kind: 'Conv2d', normKind: 'BatchNorm2d', status: 'folded' });
    expect(report.pairs[0].methods.sort()).toEqual(['_forward_impl', 'forward']);
  });

  it('a BatchNorm in training mode is skipped with a reason, unless treatTrainingAsEval', async () => {
    const m = await load(model('trainable').path);
    const skipped = await m.inspect();
    expect(skipped.folded).toBe(0);
    expect(skipped.pairs.every((p) => /training mode/.test(p.reason ?? ''))).toBe(true);
    const { module, report } = await m.fuse({ treatTrainingAsEval: true });
    expect(report.folded).toBe(2);
    // Folded with running statistics: the fused module computes what the eval-mode module does.
    const evalCase = model('trainable').cases.find((c) => c.mode === 'eval')!;
    expectMatches(await module.forward(...inputsOf(evalCase)), evalCase.output, 2e-5);
  });

  it('fusing a fused module changes nothing; the same input gives byte-identical files', async () => {
    const m = await load(model('resnet18_traced').path);
    fs.mkdirSync(path.join(dir, 'one'));
    fs.mkdirSync(path.join(dir, 'two'));
    const a = path.join(dir, 'one', 'm.pt'), b = path.join(dir, 'two', 'm.pt'), c = path.join(dir, 'c.pt');
    const first = await m.fuse();
    await first.module.save(a);
    await (await m.fuse()).module.save(b);
    expect(fs.readFileSync(a).equals(fs.readFileSync(b))).toBe(true);
    const twice = await first.module.fuse();
    expect(twice.report.pairs).toHaveLength(0);
    await twice.module.save(c);
    const x = inputsOf(model('resnet18_traced').cases[0]);
    const [y1, y2] = [await first.module.forward(...x), await twice.module.forward(...x)] as Tensor[];
    expect(y2.toTypedArray()).toEqual(y1.toTypedArray());
  });

  it('validate and benchmark report numbers; fuse() options are checked', async () => {
    const m = await load(model('convbn_traced').path);
    const { report } = await m.fuse({ validate: { inputs: [[2, 3, 16, 16]] }, benchmark: { inputs: [[2, 3, 16, 16]], iterations: 3, warmup: 1 } });
    expect(report.validation).toMatchObject({ passed: true, inputs: 1, atol: 1e-4, rtol: 1e-3 });
    expect(report.validation!.maxAbsError).toBeLessThan(1e-4);
    expect(report.benchmark).toMatchObject({ iterations: 3, warmup: 1 });
    expect(report.benchmark!.speedup).toBeGreaterThan(0);
    expect(report.timings.validate).toBeGreaterThan(0);
    expect(report.libtorch).toMatch(/^\d/);
    expect(() => m.fuse({ validat: {} } as never)).toThrow(RangeError);
    expect(() => m.fuse({ validate: { inputs: [] } })).toThrow(TypeError);
    expect(() => m.fuse({ benchmark: { inputs: [[1]], iterations: 0 } })).toThrow(RangeError);
    expect(() => m.fuse({ dryRun: true })).toThrow(/inspect/);
  });
});
