/**
 * fuse() and inspect(): option checking, and the two phases that run models
 * (validation and benchmark), around the native analysis and rewrite.
 *
 * Validation runs the same inputs through the original and the fused module
 * and compares every output tensor. Over the tolerance, it isolates the
 * pairs responsible (each folded pair alone), leaves those unfolded and
 * says so; or throws ERR_VALIDATION if asked to.
 */
import { NativeModule } from './binding';
import { rangeError, TorchfoldError, typeError } from './errors';
import { BenchmarkReport, FuseReport, LatencyStats, ValidationReport } from './report';
import { getNumThreads, versions } from './runtime';
import { Tensor } from './tensor';
import { expectKnownKeys, expectOptions } from './validate';
import type { TorchValue } from './values';

/**
 * One input of a forward call: a {@link Tensor}, used as it is, or a shape,
 * filled with seeded standard-normal float32 values (the same values on every
 * run; the i-th input of a list uses `seed + i`). A shape may hold at most
 * 2^26 elements; give a Tensor for larger samples.
 */
export type SampleInput = Tensor | number[];

/**
 * `fuse({ validate })`: runs the module before and after on the same inputs and
 * compares every floating-point output element.
 */
export interface ValidateOptions {
  /** The arguments of one `forward` call. */
  inputs: SampleInput[];
  /**
   * Absolute tolerance: an element passes when |after − before| ≤ atol + rtol·|before|.
   *
   * @defaultValue `1e-4`; `1e-2` for a float16 or bfloat16 output
   */
  atol?: number;
  /**
   * Relative tolerance, as in {@link ValidateOptions.atol}.
   *
   * @defaultValue `1e-3`; `1e-2` for a float16 or bfloat16 output
   */
  rtol?: number;
  /**
   * What to do when an output is past the tolerance: `'unfold'` finds the folded
   * pairs that alone push it past (all of them if none does alone), leaves them
   * unfolded with a reason and validates again; `'throw'` rejects with
   * `ERR_VALIDATION`; `'report'` only reports (`validation.passed` is false).
   *
   * @defaultValue `'unfold'`
   */
  onFailure?: 'unfold' | 'throw' | 'report';
  /**
   * Seed of the values that fill shape inputs (an integer ≥ 0).
   *
   * @defaultValue `0`
   */
  seed?: number;
}

/**
 * `fuse({ benchmark })`: times the module before and after on the same inputs,
 * interleaved (before, after, before, ...) after a warm-up.
 */
export interface BenchmarkOptions {
  /** The arguments of one `forward` call. */
  inputs: SampleInput[];
  /**
   * Timed calls of each module (an integer ≥ 1).
   *
   * @defaultValue `20`
   */
  iterations?: number;
  /**
   * Untimed calls of each module first (an integer ≥ 0).
   *
   * @defaultValue `3`
   */
  warmup?: number;
  /**
   * Seed of the values that fill shape inputs (an integer ≥ 0).
   *
   * @defaultValue `0`
   */
  seed?: number;
}

/**
 * `fuse({ optimize })`: tries the input module, the fused module, frozen,
 * frozen + optimize_for_inference and, on the CPU, frozen + oneDNN
 * convolutions, channels_last, oneDNN Graph fusion (libtorch 2.x), both, and
 * NNC fusion; validates each against the input module, checks that it keeps
 * every method and can be saved (as itself, or as its portable form plus a
 * recipe), times them interleaved and keeps the fastest eligible one. See
 * {@link OptimizeReport}.
 */
export interface OptimizeOptions {
  /**
   * The arguments of one `forward` call, for validating and timing the candidates.
   * One of this, `benchmark.inputs` or `validate.inputs` must be given.
   *
   * @defaultValue `benchmark.inputs`, else `validate.inputs`
   */
  inputs?: SampleInput[];
  /**
   * Timed rounds; each runs every candidate once, interleaved (an integer ≥ 1).
   *
   * @defaultValue `20`
   */
  iterations?: number;
  /**
   * Untimed rounds first (an integer ≥ 0).
   *
   * @defaultValue `3`
   */
  warmup?: number;
  /**
   * A candidate must match the input module's outputs within this absolute tolerance.
   *
   * @defaultValue `validate.atol`, else `1e-4` (`1e-2` for a float16 or bfloat16 output)
   */
  atol?: number;
  /**
   * A candidate must match the input module's outputs within this relative tolerance.
   *
   * @defaultValue `validate.rtol`, else `1e-3` (`1e-2` for a float16 or bfloat16 output)
   */
  rtol?: number;
  /**
   * Seed of the values that fill shape inputs (an integer ≥ 0).
   *
   * @defaultValue `benchmark.seed`, else `0`
   */
  seed?: number;
  /**
   * Keep only candidates that can be saved and loaded back: as themselves, or
   * as their portable form plus a recipe that {@link load} re-applies (how
   * `frozen+optimized` and the fuser candidates save). `false` also allows a
   * candidate whose portable form fails the round trip, for in-process use.
   *
   * @defaultValue `true`
   */
  requireSaveable?: boolean;
}

/**
 * Options of {@link ScriptModule.fuse}. Unknown keys throw a RangeError, so a
 * misspelled option is never silently ignored.
 */
export interface FuseOptions {
  /**
   * `'fold'`: BatchNorms are folded into the weights and removed.
   * `'tune'`: both modules keep their parameters; in eval mode one convolution
   * runs with weights folded on the fly, in training mode conv then BatchNorm
   * run as before, so the result stays trainable.
   *
   * @defaultValue `'fold'`
   */
  mode?: 'fold' | 'tune';
  /**
   * Also absorb mul/div/add/sub by a constant after a conv/linear into its
   * weight and bias (see {@link FuseReport.absorbed}).
   *
   * @defaultValue `false`
   */
  constants?: boolean;
  /**
   * Fold exactly these groups of module paths, `[conv, norm]` or
   * `[conv, norm, activation]`, and no other pair (those are skipped as "not
   * listed in options.modules"). A group that is not a foldable consecutive
   * pair rejects with `ERR_FUSE_GROUP`.
   *
   * @defaultValue `undefined`: every pair that can fold
   */
  modules?: string[][];
  /**
   * After folding, try freezing and libtorch's inference optimizations and keep
   * the fastest valid candidate. `true` uses the defaults of {@link
   * OptimizeOptions}; either form needs sample inputs (its own, `benchmark`'s
   * or `validate`'s).
   *
   * @defaultValue `false`
   */
  optimize?: boolean | OptimizeOptions;
  /**
   * Not for `fuse()`: `true` throws a TypeError there, since `fuse()` always
   * makes a module. Use {@link ScriptModule.inspect} for a dry run.
   *
   * @defaultValue `false`
   */
  dryRun?: boolean;
  /**
   * Fold BatchNorms that are in training mode, using their running statistics
   * (otherwise they are skipped with a reason).
   *
   * @defaultValue `false`
   */
  treatTrainingAsEval?: boolean;
  /**
   * Compare the fused module's outputs with the input module's; the result is
   * {@link FuseReport.validation}.
   *
   * @defaultValue `undefined`: no validation
   */
  validate?: ValidateOptions;
  /**
   * Time the input module against the result; the result is {@link FuseReport.benchmark}.
   *
   * @defaultValue `undefined`: no benchmark
   */
  benchmark?: BenchmarkOptions;
  /**
   * Stops the work early: fuse() then rejects with the signal's reason (an
   * AbortError by default) and frees the modules it made. Native steps in
   * progress finish first; timing loops stop between calls.
   *
   * @defaultValue `undefined`
   */
  signal?: AbortSignal;
}

export interface NativeFuseResult {
  module: NativeModule | null;
  report: Omit<FuseReport, 'folded' | 'skipped' | 'libtorch' | 'timings'> & { timings: { analyze: number; fold: number; rewrite: number; total: number } };
}

const FUSE_KEYS = ['mode', 'constants', 'modules', 'optimize', 'dryRun', 'treatTrainingAsEval', 'validate', 'benchmark', 'signal'] as const;

/**
 * A sample shape is filled with seeded values in JS and copied into libtorch,
 * and the module runs on it: cap it (64 Mi elements, 256 MiB of float32), so a
 * typo such as [1, 3, 100000, 100000] fails here instead of allocating
 * gigabytes. A larger input can still be given as a Tensor.
 */
export const MAX_SAMPLE_ELEMENTS = 2 ** 26;

export function checkInputs(inputs: unknown, name: string): SampleInput[] {
  if (!Array.isArray(inputs) || inputs.length === 0) throw typeError('a non-empty array of Tensors or shapes', name, inputs);
  inputs.forEach((x, i) => {
    const shape = Array.isArray(x) && x.every((d) => Number.isSafeInteger(d) && d >= 0);
    if (!(x instanceof Tensor) && !shape) throw typeError('a Tensor or a shape (array of integers)', `${name}[${i}]`, x);
    if (shape) {
      const n = (x as number[]).reduce((a, b) => a * b, 1);
      if (n > MAX_SAMPLE_ELEMENTS) {
        throw rangeError(`a shape of at most ${MAX_SAMPLE_ELEMENTS} elements (give a Tensor for a larger sample)`, `${name}[${i}]`,
          `[${(x as number[]).join(', ')}] (${n} elements)`);
      }
    }
  });
  return inputs as SampleInput[];
}

function checkNumber(v: unknown, name: string, min: number, integer = false): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !(v >= min) || (integer && !Number.isInteger(v))) {
    throw rangeError(`${integer ? 'an integer' : 'a number'} >= ${min}`, name, v);
  }
}

export function checkFuseOptions(options: unknown): FuseOptions {
  const o = expectOptions<FuseOptions>(options, 'options');
  expectKnownKeys(o, FUSE_KEYS, 'options');
  for (const k of ['dryRun', 'treatTrainingAsEval', 'constants'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw typeError('a boolean', `options.${k}`, o[k]);
  }
  if (o.signal !== undefined && !(o.signal instanceof AbortSignal)) throw typeError('an AbortSignal', 'options.signal', o.signal);
  if (o.mode !== undefined && o.mode !== 'fold' && o.mode !== 'tune') throw rangeError("'fold' or 'tune'", 'options.mode', o.mode);
  if (o.modules !== undefined) {
    if (!Array.isArray(o.modules) || o.modules.length === 0) throw typeError('a non-empty array of module path groups', 'options.modules', o.modules);
    const seen = new Set<string>();
    o.modules.forEach((g, i) => {
      if (!Array.isArray(g) || g.length < 2 || g.length > 3 || !g.every((p) => typeof p === 'string')) {
        throw typeError('a group of 2 or 3 module paths, e.g. [\'conv1\', \'bn1\'] or [\'conv1\', \'bn1\', \'relu\']', `options.modules[${i}]`, g);
      }
      const key = `${g[0]}\u0000${g[1]}`;
      if (seen.has(key)) throw rangeError('groups listed once each', `options.modules[${i}]`, g);
      seen.add(key);
    });
  }
  if (o.optimize !== undefined && typeof o.optimize !== 'boolean') {
    const p = expectOptions<OptimizeOptions>(o.optimize, 'options.optimize');
    expectKnownKeys(p, ['inputs', 'iterations', 'warmup', 'atol', 'rtol', 'seed', 'requireSaveable'], 'options.optimize');
    if (p.inputs !== undefined) checkInputs(p.inputs, 'options.optimize.inputs');
    checkNumber(p.iterations, 'options.optimize.iterations', 1, true);
    checkNumber(p.warmup, 'options.optimize.warmup', 0, true);
    checkNumber(p.atol, 'options.optimize.atol', 0);
    checkNumber(p.rtol, 'options.optimize.rtol', 0);
    checkNumber(p.seed, 'options.optimize.seed', 0, true);
    if (p.requireSaveable !== undefined && typeof p.requireSaveable !== 'boolean') {
      throw typeError('a boolean', 'options.optimize.requireSaveable', p.requireSaveable);
    }
  }
  if (o.optimize && !(typeof o.optimize === 'object' && o.optimize.inputs) && !o.benchmark && !o.validate) {
    throw typeError('sample inputs: give options.optimize.inputs (or benchmark.inputs / validate.inputs), ' +
      'since optimize times and checks every candidate on them', 'options.optimize', o.optimize);
  }
  if (o.optimize && o.dryRun) throw rangeError('no optimize in a dry run', 'options.optimize', o.optimize);
  if (o.validate !== undefined) {
    const v = expectOptions<ValidateOptions>(o.validate, 'options.validate');
    expectKnownKeys(v, ['inputs', 'atol', 'rtol', 'onFailure', 'seed'], 'options.validate');
    checkInputs(v.inputs, 'options.validate.inputs');
    checkNumber(v.atol, 'options.validate.atol', 0);
    checkNumber(v.rtol, 'options.validate.rtol', 0);
    checkNumber(v.seed, 'options.validate.seed', 0, true);
    if (v.onFailure !== undefined && !['unfold', 'throw', 'report'].includes(v.onFailure)) {
      throw rangeError("'unfold', 'throw' or 'report'", 'options.validate.onFailure', v.onFailure);
    }
  }
  if (o.benchmark !== undefined) {
    const b = expectOptions<BenchmarkOptions>(o.benchmark, 'options.benchmark');
    expectKnownKeys(b, ['inputs', 'iterations', 'warmup', 'seed'], 'options.benchmark');
    checkInputs(b.inputs, 'options.benchmark.inputs');
    checkNumber(b.iterations, 'options.benchmark.iterations', 1, true);
    checkNumber(b.warmup, 'options.benchmark.warmup', 0, true);
    checkNumber(b.seed, 'options.benchmark.seed', 0, true);
  }
  return o;
}

/** Fills out[from, to) with the next seeded normal values (mulberry32 + Box-Muller). */
function normalFiller(seed: number): (out: Float32Array, from: number, to: number) => void {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return (out, from, to) => {
    for (let i = from; i < to; i++) out[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  };
}

/** Seeded normal samples (mulberry32 + Box-Muller): the same input on every run. */
export function seededNormal(n: number, seed = 0): Float32Array {
  const out = new Float32Array(n);
  normalFiller(seed)(out, 0, n);
  return out;
}

/** The same values as seededNormal, made in slices of about 2 ms with the event loop free between them. */
export async function seededNormalAsync(n: number, seed = 0, slice = 1 << 16): Promise<Float32Array> {
  const out = new Float32Array(n);
  const fill = normalFiller(seed);
  for (let i = 0; i < n; i += slice) {
    fill(out, i, Math.min(n, i + slice));
    if (i + slice < n) await new Promise((resolve) => setImmediate(resolve));
  }
  return out;
}

export function materialize(inputs: SampleInput[], seed = 0): Tensor[] {
  return inputs.map((x, i) => (x instanceof Tensor ? x
    : Tensor.from(seededNormal(x.reduce((a, b) => a * b, 1), seed + i), x)));
}

/** materialize() without stalling the event loop on large shapes (fuse and toHalf run while other work goes on). */
export async function materializeAsync(inputs: SampleInput[], seed = 0): Promise<Tensor[]> {
  const out: Tensor[] = [];
  for (let i = 0; i < inputs.length; i++) {
    const x = inputs[i];
    out.push(x instanceof Tensor ? x : Tensor.from(await seededNormalAsync(x.reduce((a, b) => a * b, 1), seed + i), x));
  }
  return out;
}

function tensorsOf(v: TorchValue, out: Tensor[] = []): Tensor[] {
  if (v instanceof Tensor) out.push(v);
  else if (Array.isArray(v)) v.forEach((x) => tensorsOf(x, out));
  else if (v instanceof Map) v.forEach((x) => tensorsOf(x, out));
  else if (v && typeof v === 'object') Object.values(v).forEach((x) => tensorsOf(x, out));
  return out;
}

export type Runner = (inputs: Tensor[]) => Promise<TorchValue>;

/** Errors of `candidate` against `reference` over every floating-point output element. */
/**
 * The default tolerance for an output of this dtype: float16 and bfloat16 carry 11 and 8 significant bits, so a
 * fold (or any other rounding) moves them by about 1e-2 where float32 moves by 1e-6.
 */
export function defaultTolerance(dtype: string): { atol: number; rtol: number } {
  return dtype === 'float16' || dtype === 'bfloat16' ? { atol: 1e-2, rtol: 1e-2 } : { atol: 1e-4, rtol: 1e-3 };
}

/**
 * Compares every output tensor of the two runners by value. Without `atol`/`rtol`, each output uses
 * {@link defaultTolerance} for its dtype; the report gives the tolerance of the first output.
 */
export async function compareOutputs(reference: Runner, candidate: Runner, inputs: Tensor[],
  atolOption?: number, rtolOption?: number): Promise<ValidationReport> {
  const [a, b] = [tensorsOf(await reference(inputs)), tensorsOf(await candidate(inputs))];
  if (a.length !== b.length) throw new TorchfoldError('The fused module returns a different number of tensors', 'ERR_VALIDATION');
  let maxAbs = 0, maxRel = 0, passed = true;
  let reported: { atol: number; rtol: number } | undefined;
  for (let t = 0; t < a.length; t++) {
    const [ref, got] = [await a[t].to('cpu'), await b[t].to('cpu')];
    const fallback = defaultTolerance(ref.dtype);
    const atol = atolOption ?? fallback.atol, rtol = rtolOption ?? fallback.rtol;
    reported ??= { atol, rtol };
    // Values, not bits: float16 and bfloat16 outputs are decoded before they are compared.
    const x = ref.toValues(), y = got.toValues();
    if (x.length !== y.length) throw new TorchfoldError('The fused module returns a tensor of another shape', 'ERR_VALIDATION');
    for (let i = 0; i < x.length; i++) {
      const r = Number(x[i]), g = Number(y[i]);
      const d = Math.abs(g - r);
      if (Number.isNaN(d) && !(Number.isNaN(r) && Number.isNaN(g))) { maxAbs = Infinity; passed = false; continue; }
      if (Number.isNaN(d)) continue;
      maxAbs = Math.max(maxAbs, d);
      maxRel = Math.max(maxRel, d / Math.max(Math.abs(r), 1e-30));
      if (d > atol + rtol * Math.abs(r)) passed = false;
    }
  }
  reported ??= { atol: atolOption ?? 1e-4, rtol: rtolOption ?? 1e-3 };
  return { maxAbsError: maxAbs, maxRelError: maxRel, atol: reported.atol, rtol: reported.rtol, passed, inputs: inputs.length };
}

function stats(samples: number[]): LatencyStats {
  const s = [...samples].sort((x, y) => x - y);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * (s.length - 1) + 0.5))];
  return { medianMs: q(0.5), p10Ms: q(0.1), p90Ms: q(0.9) };
}

/** Latency of both modules on the same inputs, interleaved in rounds after a warm-up. */
export async function benchmark(before: Runner, after: Runner, inputs: Tensor[],
  iterations: number, warmup: number, signal?: AbortSignal): Promise<BenchmarkReport> {
  for (let i = 0; i < warmup; i++) { signal?.throwIfAborted(); await before(inputs); await after(inputs); }
  const tb: number[] = [], ta: number[] = [];
  for (let i = 0; i < iterations; i++) {
    signal?.throwIfAborted();
    let t0 = performance.now();
    await before(inputs);
    tb.push(performance.now() - t0);
    t0 = performance.now();
    await after(inputs);
    ta.push(performance.now() - t0);
  }
  const [b, a] = [stats(tb), stats(ta)];
  return { iterations, warmup, threads: getNumThreads(), before: b, after: a, speedup: b.medianMs / a.medianMs };
}

export function finishReport(native: NativeFuseResult['report'],
  extra: { validate: number; benchmark: number; optimize?: number }): FuseReport {
  const folded = native.pairs.filter((p) => p.status === 'folded').length;
  const optimize = extra.optimize ?? 0;
  return {
    ...native,
    folded,
    skipped: native.pairs.length - folded,
    timings: { ...native.timings, validate: extra.validate, benchmark: extra.benchmark, optimize,
      total: native.timings.total + extra.validate + extra.benchmark + optimize },
    libtorch: versions.libtorch,
  };
}

/** Latency of several modules on the same inputs, one call each per round, after a warm-up. */
export async function benchmarkMany(runners: Runner[], inputs: Tensor[], iterations: number,
  warmup: number, signal?: AbortSignal): Promise<LatencyStats[]> {
  return (await timeRounds(runners, inputs, iterations, warmup, signal)).map(stats);
}

/** Median over rounds of a[i] / b[i]: pairs the samples of one round, so a machine drifting between fast and slow phases cancels out. */
export function pairedRatio(a: number[], b: number[]): number {
  return stats(a.map((x, i) => x / b[i])).medianMs;
}

export { stats as latencyStats };

/** The raw samples behind benchmarkMany: milliseconds per runner and round. */
export async function timeRounds(runners: Runner[], inputs: Tensor[], iterations: number,
  warmup: number, signal?: AbortSignal): Promise<number[][]> {
  for (let i = 0; i < warmup; i++) for (const r of runners) { signal?.throwIfAborted(); await r(inputs); }
  const samples = runners.map(() => [] as number[]);
  for (let i = 0; i < iterations; i++) {
    signal?.throwIfAborted();
    for (let k = 0; k < runners.length; k++) {
      const j = (i + k) % runners.length;  // rotate who goes first
      const t0 = performance.now();
      await runners[j](inputs);
      samples[j].push(performance.now() - t0);
    }
  }
  return samples;
}
