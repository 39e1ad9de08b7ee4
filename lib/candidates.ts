/**
 * The candidates of `fuse({ optimize })` beyond the input and the fused
 * module: each a portable form (frozen; frozen + channels_last; frozen with
 * convolutions on oneDNN) and, where it helps, run-time steps on top
 * (optimize_for_inference, oneDNN Graph fusion, NNC fusion) that a save keeps
 * as a recipe (lib/recipe.ts). Built here; validated, timed and chosen in
 * module.ts.
 */
import { native, NativeModule } from './binding';
import { CandidateReport } from './report';
import { NO_RUN_TIME, RecipeSpec, RunTimeSteps, stepNames } from './recipe';
import { versions } from './runtime';
import type { Runner } from './fuse';
import type { Tensor } from './tensor';
import type { TorchValue } from './values';

interface Runnable { forward(...xs: Tensor[]): Promise<TorchValue>; dispose(): Promise<void> }

/** One candidate: its report, its module (null when it could not be built) and how to run it. */
export interface Candidate<M extends Runnable> {
  report: CandidateReport;
  module: M | null;
  run: Runner;
  /** Run-time steps over a portable form: save() writes the portable form and this recipe. */
  recipe?: { portable: M; spec: RecipeSpec };
}

interface Portable<M> { handle: NativeModule; module: M; saveable: boolean; saveError?: string }

const PLAIN = { eligible: false, saveable: false, methodsKept: false, buildMs: 0 };

function spec(candidate: string, channelsLast: boolean, runTime: RunTimeSteps): RecipeSpec {
  return { format: 'torchfold-recipe/1', candidate, portable: { freeze: true, channelsLast }, runTime, check: null,
    madeWith: { torchfold: versions.torchfold, libtorch: versions.libtorch } };
}

const failedRun: Runner = () => Promise.reject(new Error('not built'));

/**
 * Builds every candidate of a fused module, in report order: frozen,
 * frozen+optimized, and on the CPU frozen+onednn, frozen+channels_last,
 * frozen+llga, frozen+channels_last+llga, frozen+nnc. One that cannot be built
 * (or that this libtorch lacks) has a null module and a reason.
 */
export async function buildCandidates<M extends Runnable>(fused: NativeModule, onCpu: boolean, wrap: (h: NativeModule) => M,
  signal?: AbortSignal): Promise<Candidate<M>[]> {
  const out: Candidate<M>[] = [];
  try {
    await build(fused, onCpu, wrap, out, signal);
  } catch (e) {  // aborted: nothing built may leak
    for (const c of out) await c.module?.dispose();
    throw e;
  }
  return out;
}

async function build<M extends Runnable>(fused: NativeModule, onCpu: boolean, wrap: (h: NativeModule) => M, out: Candidate<M>[],
  signal?: AbortSignal): Promise<void> {
  const add = (name: string, module: M | null, extra: Partial<CandidateReport>, recipe?: Candidate<M>['recipe']) => {
    out.push({ report: { name, ...PLAIN, ...extra }, module, run: module ? (xs) => module.forward(...xs) : failedRun, recipe });
  };
  const attempt = async (name: string, build: () => Promise<void>) => {
    signal?.throwIfAborted();
    try {
      await build();
    } catch (e) {
      if (name === 'frozen' || name === 'frozen+channels_last') failures.set(name !== 'frozen', (e as Error).message);
      add(name, null, { reason: `could not be built: ${(e as Error).message}` });
    }
  };
  const failures = new Map<boolean, string>();  // why a portable form (channels_last or not) failed
  // Portable forms: frozen, and frozen + channels_last (CPU).
  let frozen: Portable<M> | null = null;
  await attempt('frozen', async () => {
    const v = await fused.portable({ freeze: true, channelsLast: false });
    frozen = { handle: v.module, module: wrap(v.module), saveable: !v.saveError, saveError: v.saveError };
    add('frozen', frozen.module, { saveable: frozen.saveable, buildMs: v.buildMs, ...(v.saveError ? { saveError: v.saveError } : {}) });
  });
  const withSteps = async (name: string, base: Portable<M> | null,
    channelsLast: boolean, steps: RunTimeSteps) => {
    if (!base) { add(name, null, { reason: `could not be built: its portable form failed: ${failures.get(channelsLast) ?? 'unknown'}` }); return; }
    await attempt(name, async () => {
      const v = await base.handle.applyRunTime(steps);
      add(name, wrap(v.module), { saveable: base.saveable, buildMs: v.buildMs, runTimeSteps: stepNames(steps),
        ...(base.saveError ? { saveError: base.saveError } : {}) }, { portable: base.module, spec: spec(name, channelsLast, steps) });
    });
  };
  await withSteps('frozen+optimized', frozen, false, { ...NO_RUN_TIME, optimizeForInference: true });
  if (!onCpu) return;
  await attempt('frozen+onednn', async () => {
    if (!frozen) throw new Error(`the frozen module could not be built: ${failures.get(false)}`);
    const v = await frozen.handle.onednn();
    if (v.rewritten === 0) {
      v.module.dispose();
      add('frozen+onednn', null, { reason: `no convolution to rewrite${v.keptReasons.length ? `: ${v.keptReasons[0]}` : ''}` });
      return;
    }
    add('frozen+onednn', wrap(v.module), { saveable: v.saveable, buildMs: v.buildMs, note: `${v.rewritten} convolutions on oneDNN, ${v.kept} kept`,
      ...(v.saveError ? { saveError: v.saveError } : {}) });
  });
  let channelsLast: Portable<M> | null = null;
  await attempt('frozen+channels_last', async () => {
    if (!frozen) throw new Error(`the frozen module could not be built: ${failures.get(false)}`);
    const v = await frozen.handle.portable({ freeze: false, channelsLast: true });
    channelsLast = { handle: v.module, module: wrap(v.module), saveable: !v.saveError, saveError: v.saveError };
    add('frozen+channels_last', channelsLast.module, { saveable: channelsLast.saveable, buildMs: v.buildMs,
      note: `${v.channelsLastWeights} convolution weights channels_last`, ...(v.saveError ? { saveError: v.saveError } : {}) });
  });
  const llgaMissing = native().fusers().llga;
  for (const [name, base, cl] of [['frozen+llga', frozen, false], ['frozen+channels_last+llga', channelsLast, true]] as const) {
    if (llgaMissing) add(name, null, { reason: `oneDNN Graph fusion is not available: ${llgaMissing}` });
    else await withSteps(name, base, cl, { ...NO_RUN_TIME, llga: true });
  }
  const nncMissing = native().fusers().nnc;
  if (nncMissing) add('frozen+nnc', null, { reason: `NNC fusion is not available: ${nncMissing}` });
  else await withSteps('frozen+nnc', frozen, false, { ...NO_RUN_TIME, nnc: true });
}
