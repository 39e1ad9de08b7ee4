// Bad options and tensors: wrong shapes, dtypes, devices, input counts, option
// values and keys, NaN/Inf inputs, huge sample shapes. Each gives a synchronous
// TypeError/RangeError with code ERR_INVALID_ARG or a TorchfoldError with a stable
// code and a message that says what was wrong; NaN/Inf are not errors: the output
// is PyTorch's. (Cases already in errors.test.ts, values.test.ts, dtypes.test.ts,
// fuse-basic.test.ts, extra-files.test.ts, inspect.test.ts are not repeated here.)
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cuda, load, ScriptModule, Tensor, TensorData, TorchfoldError, versions } from '../lib';
import { inputsOf, model, PYTHON, readTensorData, tmpDir } from './helpers/fixtures';

const dir = tmpDir('bad-args');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const f = model('convbn_scripted');
const c = f.cases[0];
const SHAPE = [2, 3, 16, 16];
const HUGE = [1, 3, 100000, 100000];  // 3e10 elements, 120 GB of float32

let m: ScriptModule;
beforeAll(async () => { m = await load(f.path); });

function zeros(shape: number[], Ctor: { new (n: number): TensorData } = Float32Array, dtype?: 'float16' | 'bool'): Tensor {
  return Tensor.from(new Ctor(shape.reduce((a, b) => a * b, 1)), shape, dtype ? { dtype } : {});
}

async function rejection(p: Promise<unknown>): Promise<TorchfoldError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  expect(e, 'the call should have rejected').toBeInstanceOf(TorchfoldError);
  return e as TorchfoldError;
}

/** A synchronous argument error: the class, code ERR_INVALID_ARG, and the message's wording. */
function expectArgError(call: () => unknown, ctor: typeof TypeError | typeof RangeError, fragment: RegExp): void {
  let thrown: unknown;
  try { call(); } catch (e) { thrown = e; }
  expect(thrown, 'the call should have thrown synchronously').toBeInstanceOf(ctor);
  expect(thrown).toMatchObject({ code: 'ERR_INVALID_ARG' });
  expect((thrown as Error).message).toMatch(/^Expected .* but received /);
  expect((thrown as Error).message).toMatch(fragment);
}

describe('tensors the model cannot take', () => {
  // libtorch's reason is the message's last line; the C++ backtrace is not in it.
  const cases: [string, () => Tensor, RegExp][] = [
    ['a 5-D input', () => zeros([2, 3, 16, 16, 1]), /Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d, but got input of size: \[2, 3, 16, 16, 1\]/],
    ['a 0-d input', () => zeros([]), /input of size: \[\]/],
    ['a spatial size of 0', () => zeros([2, 3, 0, 16]), /Kernel size can't be greater than actual input size/],
    ['float64 into a float32 conv', () => zeros(SHAPE, Float64Array), /Input type \(double\) and bias type \(float\) should be the same/],
    ['int64 into a float32 conv', () => zeros(SHAPE, BigInt64Array as never), /Input type \(long int\) and bias type \(float\)/],
    ['float16 into a float32 conv', () => zeros(SHAPE, Uint16Array, 'float16'), /Input type \(c10::Half\) and bias type \(float\)/],
    ['bool into a float32 conv', () => zeros(SHAPE, Uint8Array, 'bool'), /Input type \(bool\) and bias type \(float\)/],
  ];
  it.each(cases)('%s rejects with ERR_TORCH and libtorch\'s reason', async (_, make, reason) => {
    const e = await rejection(m.forward(make()));
    expect(e.code).toBe('ERR_TORCH');
    expect(e.message).toMatch(reason);
    expect(e.message).not.toMatch(/frame #\d/);
  });

  it('a traced model names the dtype mismatch too', async () => {
    const traced = await load(model('convbn_traced').path);
    const e = await rejection(traced.forward(zeros(SHAPE, Float64Array)));
    expect(e).toMatchObject({ code: 'ERR_TORCH', message: expect.stringMatching(/expected scalar type Double but found Float/) });
  });

  it('a batch of 0 is not an error: an empty result, as in PyTorch', async () => {
    const out = (await m.forward(zeros([0, 3, 16, 16]))) as Tensor;
    expect(out.shape).toEqual([0, 5]);
  });

  it('forward() with no input, two inputs, or the wrong kind rejects with ERR_INVALID_ARG naming the argument', async () => {
    const [x] = inputsOf(c) as Tensor[];
    expect(await rejection(m.forward())).toMatchObject({ code: 'ERR_INVALID_ARG',
      message: "Expected a value for forward() argument 'x' (Tensor) but received none" });
    expect(await rejection(m.forward(x, x))).toMatchObject({ code: 'ERR_INVALID_ARG', message: 'Expected at most 1 inputs for forward() but received 2' });
    for (const v of [42, 'x', null, [x], { x }]) {
      expect(await rejection(m.forward(v)), JSON.stringify(v)).toMatchObject({ code: 'ERR_INVALID_ARG',
        message: expect.stringMatching(/^Expected Tensor for forward\(\) argument 'x' but received /) });
    }
    expectArgError(() => m.run(''), TypeError, /for method/);
  });

  it('the module still works after all of these', async () => {
    const out = await m.forward(...inputsOf(c));
    expect((out as Tensor).shape).toEqual([2, 5]);
  });
});

describe.skipIf(cuda.isAvailable())('devices that are not there (no GPU here)', () => {
  it("tensor.to('cuda') and module.to('cuda:1') reject with ERR_DEVICE_UNAVAILABLE naming the device", async () => {
    const x = zeros([2]);
    expect(await rejection(x.to('cuda'))).toMatchObject({ code: 'ERR_DEVICE_UNAVAILABLE',
      message: expect.stringMatching(versions.cudaBuild
        ? /^Device cuda:0 is not available: this build has CUDA \(libtorch [^)]+\), but no GPU is visible/
        : /^Device cuda:0 is not available: this build is CPU-only \(libtorch [^)]+\): rebuild torchfold against a CUDA libtorch/) });
    expect(await rejection(m.to('cuda:1'))).toMatchObject({ code: 'ERR_DEVICE_UNAVAILABLE', message: expect.stringMatching(/cuda:1/) });
    expect(x.device).toBe('cpu');
    expect(m.device).toBe('cpu');
  });
});

describe('device strings', () => {
  it('a malformed device throws synchronously for tensors and modules', () => {
    expectArgError(() => zeros([2]).to('gpu'), RangeError, /'cpu', 'cuda' or 'cuda:N' for device but received 'gpu'/);
    expectArgError(() => m.to(0 as never), TypeError, /device string/);
    expectArgError(() => m.to('cuda:64'), RangeError, /cuda:64/);
  });
});

describe('option values and keys', () => {
  const table: [string, () => unknown, typeof TypeError | typeof RangeError, RegExp][] = [
    ['load: verify not a boolean', () => load(f.path, { verify: 'yes' as never }), TypeError, /a boolean for options\.verify/],
    ['load: isolate not an object', () => load(f.path, { isolate: 'yes' as never }), TypeError, /options\.isolate/],
    ['load: isolate.timeoutMs < 0', () => load(f.path, { isolate: { timeoutMs: -1 } }), RangeError, /options\.isolate\.timeoutMs but received number -1/],
    ['load: isolate.timeoutMs NaN', () => load(f.path, { isolate: { timeoutMs: NaN } }), RangeError, /timeoutMs but received number NaN/],
    ['load: unknown isolate key', () => load(f.path, { isolate: { timeout: 1 } as never }), RangeError, /'timeout'/],
    ['load: options an array', () => load(f.path, [] as never), TypeError, /an options object for options/],
    ['load: device a number', () => load(f.path, { device: 0 as never }), TypeError, /options\.device/],
    ['fuse: options null', () => m.fuse(null as never), TypeError, /an options object for options but received null/],
    ['fuse: treatTrainingAsEval not a boolean', () => m.fuse({ treatTrainingAsEval: 1 as never }), TypeError, /options\.treatTrainingAsEval/],
    ['fuse: validate without inputs', () => m.fuse({ validate: {} as never }), TypeError, /options\.validate\.inputs/],
    ['fuse: a negative size', () => m.fuse({ validate: { inputs: [[1, -3]] } }), TypeError, /options\.validate\.inputs\[0\]/],
    ['fuse: a NaN size', () => m.fuse({ validate: { inputs: [[1, NaN]] } }), TypeError, /options\.validate\.inputs\[0\]/],
    ['fuse: a shape as a string', () => m.fuse({ validate: { inputs: ['2,3,16,16' as never] } }), TypeError, /options\.validate\.inputs\[0\] but received '2,3,16,16'/],
    ['fuse: atol NaN', () => m.fuse({ validate: { inputs: [SHAPE], atol: NaN } }), RangeError, /options\.validate\.atol but received number NaN/],
    ['fuse: rtol < 0', () => m.fuse({ validate: { inputs: [SHAPE], rtol: -1 } }), RangeError, /options\.validate\.rtol/],
    ['fuse: unknown onFailure', () => m.fuse({ validate: { inputs: [SHAPE], onFailure: 'explode' as never } }), RangeError, /'explode'/],
    ['fuse: seed < 0', () => m.fuse({ validate: { inputs: [SHAPE], seed: -1 } }), RangeError, /options\.validate\.seed/],
    ['fuse: unknown validate key', () => m.fuse({ validate: { inputs: [SHAPE], tol: 1 } as never }), RangeError, /'tol'/],
    ['fuse: warmup < 0', () => m.fuse({ benchmark: { inputs: [SHAPE], warmup: -1 } }), RangeError, /options\.benchmark\.warmup/],
    ['fuse: iterations Infinity', () => m.fuse({ benchmark: { inputs: [SHAPE], iterations: Infinity } }), RangeError, /received number Infinity/],
    ['fuse: optimize a string', () => m.fuse({ optimize: 'yes' as never }), TypeError, /options\.optimize/],
    ['fuse: optimize iterations 0', () => m.fuse({ optimize: { inputs: [SHAPE], iterations: 0 } }), RangeError, /options\.optimize\.iterations/],
    ['save: options a string', () => m.save(path.join(dir, 'a.pt'), 'x' as never), TypeError, /an options object for options/],
    ['save: extraFiles an array', () => m.save(path.join(dir, 'a.pt'), { extraFiles: ['a'] as never }), TypeError, /options\.extraFiles/],
    ['save: a NUL in the path', () => m.save(path.join(dir, 'a\0b.pt')), TypeError, /NUL/],
    ['inspect: method not a string', () => m.inspect({ method: 5 as never }), TypeError, /options\.method/],
    ['toHalf: minParams not a number', () => m.toHalf({ minParams: 'x' as never }), RangeError, /minParams/],
  ];
  it.each(table)('%s throws synchronously with ERR_INVALID_ARG', (_, call, ctor, fragment) => {
    expectArgError(call, ctor, fragment);
  });
});

describe('sample inputs that do not fit the model', () => {
  it('reject with the forward() error, and leave the module usable', async () => {
    expect(await rejection(m.fuse({ validate: { inputs: [[2, 5, 16, 16]] } }))).toMatchObject({
      code: 'ERR_TORCH', message: expect.stringMatching(/expected input\[2, 5, 16, 16\] to have 3 channels/) });
    expect(await rejection(m.fuse({ benchmark: { inputs: [zeros(SHAPE, Float64Array)], iterations: 1, warmup: 0 } }))).toMatchObject({
      code: 'ERR_TORCH', message: expect.stringMatching(/double/) });
    expect(await rejection(m.fuse({ validate: { inputs: [SHAPE, SHAPE] } }))).toMatchObject({
      code: 'ERR_INVALID_ARG', message: 'Expected at most 1 inputs for forward() but received 2' });
    const { report } = await m.fuse({ validate: { inputs: [SHAPE] } });
    expect(report.validation!.passed).toBe(true);
  });
});

describe('NaN and Inf inputs', () => {
  // Sample 0 or 1 of the fixture input gets a NaN / +Inf / -Inf at one place, or
  // all of sample 1 is 3e38 (the sums overflow inside the model). PyTorch computes
  // the expected outputs here, from the same bytes.
  const base = readTensorData((c.inputs[0] as { __tensor__: never }).__tensor__) as Float32Array;
  const per = base.length / SHAPE[0];
  const edit = (edits: [number, number][]) => { const x = base.slice(); for (const [i, v] of edits) x[i] = v; return x; };
  const inputs: Record<string, Float32Array> = {
    nan0: edit([[7, NaN]]),
    posinf1: edit([[per + 40, Infinity]]),
    neginf1: edit([[per + 99, -Infinity]]),
    overflow1: (() => { const x = base.slice(); x.fill(3e38, per); return x; })(),
  };
  const expected: Record<string, Float32Array> = {};

  beforeAll(() => {
    const script = [
      'import sys, torch',
      'm = torch.jit.load(sys.argv[1]).eval()',
      'for name in sys.argv[2:]:',
      "    x = torch.frombuffer(bytearray(open(name + '.in', 'rb').read()), dtype=torch.float32).reshape(2, 3, 16, 16)",
      '    with torch.no_grad():',
      "        open(name + '.out', 'wb').write(m(x).contiguous().numpy().tobytes())",
    ].join('\n');
    for (const [k, x] of Object.entries(inputs)) fs.writeFileSync(path.join(dir, `${k}.in`), Buffer.from(x.buffer));
    execFileSync(PYTHON, ['-c', script, f.path, ...Object.keys(inputs).map((k) => path.join(dir, k))]);
    for (const k of Object.keys(inputs)) {
      const b = fs.readFileSync(path.join(dir, `${k}.out`));
      expected[k] = new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
    }
  });

  /** NaN where PyTorch has NaN, the same infinities, finite values within atol. */
  function expectSameAsTorch(actual: Float32Array, ref: Float32Array, atol: number, where: string): void {
    expect(actual.length, where).toBe(ref.length);
    for (let i = 0; i < ref.length; i++) {
      if (Number.isNaN(ref[i])) expect(actual[i], `${where}[${i}]`).toBeNaN();
      else if (!Number.isFinite(ref[i])) expect(actual[i], `${where}[${i}]`).toBe(ref[i]);
      else expect(Math.abs(actual[i] - ref[i]), `${where}[${i}]`).toBeLessThanOrEqual(atol);
    }
  }

  it.each(Object.keys(inputs))('%s: no error; the outputs are PyTorch\'s, NaN and Inf included', async (k) => {
    const ref = expected[k];
    // The check means something: each case has a NaN row and a finite row.
    expect(ref.some(Number.isNaN)).toBe(true);
    expect(ref.some(Number.isFinite)).toBe(true);
    const x = Tensor.from(inputs[k], SHAPE);
    const out = (await m.forward(x)) as Tensor;
    expectSameAsTorch(out.toTypedArray() as Float32Array, ref, c.atol!, k);
    // The folded module propagates them the same way.
    const { module: fused } = await m.fuse();
    expectSameAsTorch(((await fused.forward(x)) as Tensor).toTypedArray() as Float32Array, ref, 1e-4, `${k} fused`);
    await fused.dispose();
  });

  it('overflow gives -Inf where PyTorch does', () => {
    expect(Array.from(expected.overflow1)).toContain(-Infinity);
  });
});

describe('huge shapes', () => {
  const peakMb = () => Number(/VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;

  it('inspect() propagates a huge input shape symbolically: nothing of that size is allocated', async () => {
    const traced = await load(model('convbn_traced').path);
    const before = peakMb();
    const report = await traced.inspect({ inputShapes: [HUGE] });
    const linear = report.graph.nodes.find((n) => n.kind === 'aten::linear')!;
    expect(linear.outputs[0].shape).toEqual([1, 5]);
    expect(peakMb() - before).toBeLessThan(256);
  });

  it('a huge sample shape in fuse()/toHalf() fails fast with a RangeError and allocates nothing', async () => {
    const before = peakMb();
    const calls: [string, () => Promise<unknown>][] = [
      ['validate', () => m.fuse({ validate: { inputs: [HUGE] } })],
      ['benchmark', () => m.fuse({ benchmark: { inputs: [HUGE] } })],
      ['optimize', () => m.fuse({ optimize: { inputs: [HUGE] } })],
      ['toHalf', () => m.toHalf({ dtype: 'bfloat16', validate: { inputs: [HUGE] } })],
    ];
    for (const [name, call] of calls) {
      // Refused before any sample is made: no memory of that size is touched.
      let error: unknown;
      try { await call(); } catch (e) { error = e; }
      expect(error, name).toBeInstanceOf(RangeError);
    }
    expect(peakMb() - before).toBeLessThan(256);
  });

  // Sample shapes are size-checked when the options are (64 Mi elements at most).
  it('a huge sample shape throws synchronously, ERR_INVALID_ARG, naming the option', () => {
    expectArgError(() => m.fuse({ validate: { inputs: [HUGE] } }), RangeError, /options\.validate\.inputs\[0\]/);
  });

  // Sizes whose product overflows int64 (a 0 among them keeps the data length right) never reach libtorch.
  it('Tensor.from with sizes past int64 is a RangeError', () => {
    expectArgError(() => Tensor.from(new Float32Array(0), [2 ** 53 - 1, 2 ** 53 - 1, 0]), RangeError, /shape/);
  });
});

describe('argument errors that once had no code', () => {
  it('fuse({ dryRun: true }) has code ERR_INVALID_ARG', () => {
    expectArgError(() => m.fuse({ dryRun: true }), TypeError, /inspect/);
  });

  it('fuse({ benchmark: { seed: "x" } }) is refused', () => {
    expectArgError(() => m.fuse({ benchmark: { inputs: [SHAPE], iterations: 1, warmup: 0, seed: 'x' as never } }), RangeError, /benchmark\.seed/);
  });
});
