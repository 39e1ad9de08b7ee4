/** `torchfold bench`: the model as loaded against each transform, timed side by side in one run. */
import * as path from 'path';
import Table from 'cli-table3';
import { compareOutputs, latencyStats, pairedRatio, Runner, timeRounds } from '../fuse';
import { load, ScriptModule } from '../module';
import type { LatencyStats } from '../report';
import { getNumThreads, setNumThreads, versions } from '../runtime';
import type { DType } from '../tensor';
import type { Io } from './optimize';
import { fmt } from './format';
import { sampleInputs } from './samples';
import { checkDevice, UsageError } from './usage';

export const VARIANTS = ['loaded', 'fold', 'tune', 'optimize'] as const;
export type Variant = typeof VARIANTS[number];

export interface BenchFlags {
  inputShape?: number[][];
  inputDtype?: DType[];
  iterations: number;
  warmup: number;
  threads?: number;
  device: string;
  verify?: boolean;
  isolate?: boolean;
  variants?: Variant[];
  treatTrainingAsEval?: boolean;
  json?: boolean;
}

export interface BenchVariant {
  name: Variant;
  /** For optimize: the candidate it kept. */
  detail?: string;
  /** Time to make it from the loaded module (ms); 0 for 'loaded'. */
  transformMs: number;
  folded: number | null;
  latency: LatencyStats;
  /** Median over rounds of loaded's time / this variant's time in the same round. */
  speedup: number;
  /** Largest |output - loaded module's output| on the sample input. */
  maxAbsError: number;
}

export async function benchCommand(file: string, f: BenchFlags, io: Io): Promise<number> {
  if (!f.inputShape?.length) throw new UsageError('bench runs the model: give its input with --input-shape, e.g. --input-shape 1,3,224,224');
  if (f.inputDtype && f.inputDtype.length > 1 && f.inputDtype.length !== f.inputShape.length) {
    throw new UsageError('Give one --input-dtype for all inputs, or one per --input-shape');
  }
  checkDevice(f.device);
  if (f.threads) setNumThreads(f.threads);
  const wanted = f.variants ?? [...VARIANTS];
  const loaded = await load(path.resolve(file), { device: f.device, verify: Boolean(f.verify), isolate: Boolean(f.isolate) });
  const made: ScriptModule[] = [];
  const inputs = await sampleInputs(f.inputShape, f.inputDtype ?? [], f.device);
  try {
    const common = { treatTrainingAsEval: Boolean(f.treatTrainingAsEval) };
    const variants: { name: Variant; module: ScriptModule; transformMs: number; folded: number | null; detail?: string }[] = [];
    if (wanted.includes('loaded')) variants.push({ name: 'loaded', module: loaded, transformMs: 0, folded: null });
    for (const name of wanted) {
      if (name === 'loaded') continue;
      const t0 = performance.now();
      const r = await loaded.fuse(name === 'tune' ? { ...common, mode: 'tune' }
        : name === 'optimize' ? { ...common, optimize: { inputs, iterations: Math.max(5, Math.min(20, f.iterations)) } } : common);
      made.push(r.module);
      variants.push({ name, module: r.module, transformMs: performance.now() - t0, folded: r.report.folded,
        ...(r.report.optimize ? { detail: `kept ${r.report.optimize.chosen}` } : {}) });
    }
    const original: Runner = (xs) => loaded.forward(...xs);
    const errors: number[] = [];
    for (const v of variants) errors.push((await compareOutputs(original, (xs) => v.module.forward(...xs), inputs, 0, 0)).maxAbsError);
    const samples = await timeRounds(variants.map((v) => (xs: typeof inputs) => v.module.forward(...xs)), inputs, f.iterations, f.warmup);
    const hasLoaded = variants[0]?.name === 'loaded';
    // Speedups pair the rounds: loaded's time / this variant's time in the same round, median over rounds.
    const out: BenchVariant[] = variants.map((v, i) => ({
      name: v.name, ...(v.detail ? { detail: v.detail } : {}), transformMs: v.transformMs, folded: v.folded,
      latency: latencyStats(samples[i]), speedup: !hasLoaded ? NaN : i === 0 ? 1 : pairedRatio(samples[0], samples[i]), maxAbsError: errors[i],
    }));
    const result = {
      file: path.resolve(file), torchfold: versions.torchfold, libtorch: versions.libtorch, device: f.device,
      threads: getNumThreads(), iterations: f.iterations, warmup: f.warmup, inputs: f.inputShape, variants: out,
    };
    if (f.json) {
      io.stdout.write(JSON.stringify(result, (_k, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2) + '\n');
      return 0;
    }
    const table = new Table({
      head: ['Variant', 'Median', 'p10', 'p90', 'Speedup', 'Max abs error', 'Transform', 'Folded'],
      style: { head: [], border: [], compact: true }, colAligns: ['left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    });
    for (const v of out) {
      table.push([v.detail ? `${v.name} (${v.detail})` : v.name, fmt.ms(v.latency.medianMs), fmt.ms(v.latency.p10Ms),
        fmt.ms(v.latency.p90Ms), fmt.ratio(v.speedup), v.name === 'loaded' ? '—' : fmt.err(v.maxAbsError),
        v.name === 'loaded' ? '—' : fmt.ms(v.transformMs), v.folded === null ? '—' : String(v.folded)]);
    }
    io.stdout.write(`${file}: inputs ${f.inputShape.map((s) => `[${s.join(',')}]`).join(' ')}, ${f.device}, ` +
      `${getNumThreads()} thread${getNumThreads() === 1 ? '' : 's'}, ${f.iterations} interleaved rounds after ${f.warmup} warm-up\n`);
    io.stdout.write(table.toString() + '\n');
    return 0;
  } finally {
    for (const t of inputs) t.dispose();
    for (const m of made) await m.dispose();
    await loaded.dispose();
  }
}
