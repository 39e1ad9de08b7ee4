// toHalf(): chosen Linear/Conv layers to float16/bfloat16 with casts at their
// boundary. PyTorch (scripts/make_transform_fixtures.py) did the same
// conversion eagerly (layers .to(bfloat16), input cast in, output cast back);
// torchfold must pick the same layers and give the same outputs.
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, Tensor, versions } from '../lib';
import { decode, expectMatches, FIXTURES, generation, pytorch2Fixtures, readTensorData, tmpDir } from './helpers/fixtures';
import { manifestOf, within } from './helpers/subdir';

interface OptionSet { options: { minParams?: number; layers?: string[]; dtype: 'float16' | 'bfloat16' }; layers: string[]; output: unknown | null }
interface HalfCase { file: string; inputs: unknown[]; output: unknown; params: Record<string, number>; option_sets: OptionSet[] }
const cases = manifestOf<{ half: Record<string, HalfCase> }>('transform').half;
const out = tmpDir('half');
const gen = generation(versions.libtorch);
/** PyTorch 2.x's output for an option set (the transform fixtures come from 1.13, which cannot run float16). */
function pytorch2Output(name: string, options: OptionSet['options']): unknown {
  const sets = pytorch2Fixtures().half[name] ?? [];
  const hit = sets.find((x) => JSON.stringify(x.options) === JSON.stringify(options));
  if (!hit) throw new Error(`no PyTorch 2.x output for ${name} ${JSON.stringify(options)}`);
  return hit.output;
}
const rows = Object.entries(cases).flatMap(([name, c]) => c.option_sets.map((s) => [name, JSON.stringify(s.options), c, s] as const));

function data(ref: unknown): Float32Array {
  const r = (within('transform', ref) as { __tensor__: { file: string; dtype: 'float32'; shape: number[] } }).__tensor__;
  return readTensorData(r) as Float32Array;
}

describe.each(rows)('%s toHalf(%s)', (name, _, c, s) => {
  it('converts the layers PyTorch picked, and runs like its eager conversion', async () => {
    const m = await load(path.join(FIXTURES, 'transform', c.file));
    const { module, report } = await m.toHalf(s.options);
    expect(report.dtype).toBe(s.options.dtype);
    expect(report.layers.filter((l) => l.status === 'converted').map((l) => l.path).sort()).toEqual([...s.layers].sort());
    for (const l of report.layers) {
      expect(l.params, l.path).toBe(c.params[l.path]);
      if (l.status === 'skipped') expect(l.reason, l.path).toBeTruthy();
    }
    expect(report.paramsConverted).toBe(s.layers.reduce((n, l) => n + c.params[l], 0));
    const state = module.stateDict();
    for (const l of s.layers) expect(state[`${l}.weight`].dtype, l).toBe(s.options.dtype);
    expect(m.stateDict()[`${s.layers[0]}.weight`].dtype).toBe('float32');  // the input module is untouched
    const x = c.inputs.map((t) => decode(within('transform', t)));
    if (s.output === null && gen === '1.13') {
      // No float16 Linear/Conv kernels in libtorch 1.13 on the CPU: the converted module fails clearly when run.
      await expect(module.forward(...x)).rejects.toMatchObject({ code: 'ERR_TORCH', message: /not implemented for 'Half'/ });
      return;
    }
    if (gen === '2.x') {
      // libtorch 2.x: compared with PyTorch 2.x's eager conversion. float16 runs on the CPU here; both
      // dtypes match by value, not bit for bit: libtorch 2.13 and PyTorch 2.14 may sum in another order.
      const y = await module.forward(...x) as Tensor;
      expect(y.dtype).toBe('float32');
      expectMatches(y, pytorch2Output(name, s.options) as never, s.options.dtype === 'float16' ? 1e-3 : 1e-5);
      // validate compares values, and the converted model saves and reloads unchanged.
      const v = (await m.toHalf({ ...s.options, validate: { inputs: x as Tensor[] } })).report.validation!;
      expect(v.passed).toBe(true);
      expect(v.maxAbsError).toBeGreaterThan(0);
      expect(v.maxAbsError).toBeLessThan(0.05);
      const file = path.join(out, `${name}-2x.pt`);
      await module.save(file);
      expect(Array.from((await (await load(file)).forward(...x) as Tensor).toTypedArray() as Float32Array))
        .toEqual(Array.from(y.toTypedArray() as Float32Array));
      fs.rmSync(file);
      return;
    }
    const y = await module.forward(...x) as Tensor;
    expect(y.dtype).toBe('float32');
    expect(Array.from(y.toTypedArray() as Float32Array)).toEqual(Array.from(data(s.output)));
    // validate reports the error the conversion causes, against the float32 module.
    const v = (await m.toHalf({ ...s.options, validate: { inputs: x as Tensor[] } })).report.validation!;
    const ref = data(c.output), got = y.toTypedArray() as Float32Array;
    let worst = 0;
    for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(got[i] - ref[i]));
    expect(v.maxAbsError).toBeCloseTo(worst, 6);
    const file = path.join(out, `${name}.pt`);
    await module.save(file);
    expect(Array.from((await (await load(file)).forward(...x) as Tensor).toTypedArray() as Float32Array))
      .toEqual(Array.from(got));
    fs.rmSync(file);
  });
});

describe('toHalf options', () => {
  it('rejects bad options and unknown layers with clear errors', async () => {
    const m = await load(path.join(FIXTURES, 'transform', cases.mlp.file));
    expect(() => m.toHalf({ dtype: 'float8' as never })).toThrow(RangeError);
    expect(() => m.toHalf({ minParams: -1 })).toThrow(RangeError);
    expect(() => m.toHalf({ layers: [] })).toThrow(TypeError);
    expect(() => m.toHalf({ layers: ['fc1'], minParams: 3 })).toThrow(/not both/);
    await expect(m.toHalf({ layers: ['nope'] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /'nope' does not exist/ });
    const other = m.namedModules().find((x) => x.path !== '' && !/Linear|Conv/.test(x.type));
    if (other) {
      await expect(m.toHalf({ layers: [other.path] })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: /not a Linear/ });
    }
    expect(() => m.toHalf({ layers: [''] })).toThrow(TypeError);
  });
});
