/** `torchfold optimize`: options resolved, the batch run, and the reports written. */
import * as fs from 'fs';
import * as path from 'path';
import { getNumThreads, setNumThreads, versions } from '../runtime';
import type { DType } from '../tensor';
import { defaultMemoryBudget, Interrupted, optionsKeyOf, removeOwnTemporaries, runBatch, writeFileAtomic } from './batch';
import { renderHtml } from './html';
import { checkPlan, checkWritableFile, DEFAULT_GLOB, discover, OutputMode, parseShard, realPathOf, takeShard } from './inputs';
import { Progress, summaryTable, totalsLine } from './progress';
import { OptimizeRunReport, REPORT_SCHEMA, ResolvedOptions, InputResult } from './report';
import { sampleInputs } from './samples';
import { checkDevice, UsageError } from './usage';

/** Options as commander hands them over (already parsed by the option parsers in main.ts). */
export interface OptimizeFlags {
  output?: string;
  outDir?: string;
  inPlace?: boolean;
  backup: boolean;
  glob?: string;
  mode: 'fold' | 'tune';
  constants?: boolean;
  optimize?: boolean;
  modules?: string[][];
  treatTrainingAsEval?: boolean;
  device: string;
  verify?: boolean;
  isolate?: boolean;
  threads?: number;
  inputShape?: number[][];
  inputDtype?: DType[];
  validate?: boolean;
  atol?: number;
  rtol?: number;
  unfoldOnFailure?: boolean;
  bench?: number;
  dryRun?: boolean;
  jobs: number;
  maxMemory?: number;
  shard?: string;
  resume?: boolean;
  json?: boolean;
  report?: string;
  reportHtml?: string;
  quiet?: boolean;
  verbose?: boolean;
  color?: boolean;
}

export interface Io {
  stdout: NodeJS.WritableStream & { isTTY?: boolean };
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
}

function outputMode(f: OptimizeFlags): OutputMode {
  const chosen = [f.output && '--output', f.outDir && '--out-dir', f.inPlace && '--in-place'].filter(Boolean);
  if (chosen.length > 1) throw new UsageError(`Use one of --output, --out-dir and --in-place, not ${chosen.join(' and ')}`);
  if (f.output) {
    const file = path.resolve(f.output);
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) throw new UsageError(`--output ${f.output} is a folder; use --out-dir for a folder`);
    return { kind: 'file', file };
  }
  if (f.outDir) {
    const dir = path.resolve(f.outDir);
    if (fs.existsSync(dir) && !fs.statSync(dir).isDirectory()) throw new UsageError(`--out-dir ${f.outDir} is a file, not a folder`);
    return { kind: 'dir', dir };
  }
  if (f.inPlace) return { kind: 'in-place', backup: f.backup };
  if (!f.backup) throw new UsageError('--no-backup only applies with --in-place');
  return { kind: 'beside' };
}

export function resolveOptions(f: OptimizeFlags): ResolvedOptions {
  const shapes = f.inputShape ?? [];
  const dtypes = f.inputDtype ?? [];
  const needsInputs = [f.validate && '--validate', f.optimize && '--optimize', f.bench && '--bench'].filter(Boolean);
  if (needsInputs.length && shapes.length === 0) {
    throw new UsageError(`${needsInputs.join(', ')} run${needsInputs.length === 1 ? 's' : ''} the model: give its input with --input-shape, e.g. --input-shape 1,3,224,224`);
  }
  if (dtypes.length > 1 && dtypes.length !== shapes.length) {
    throw new UsageError(`Give one --input-dtype for all inputs, or one per --input-shape (${shapes.length}); got ${dtypes.length}`);
  }
  if (dtypes.length && !shapes.length) throw new UsageError('--input-dtype needs --input-shape');
  if (!f.validate && (f.atol !== undefined || f.rtol !== undefined || f.unfoldOnFailure)) {
    throw new UsageError('--atol, --rtol and --unfold-on-failure apply with --validate');
  }
  if (f.dryRun && (f.optimize || f.bench || f.validate)) throw new UsageError('--dry-run only analyzes: drop --optimize, --validate and --bench');
  return {
    mode: f.mode,
    constants: Boolean(f.constants),
    optimize: Boolean(f.optimize),
    modules: f.modules ?? null,
    treatTrainingAsEval: Boolean(f.treatTrainingAsEval),
    device: f.device,
    inputShapes: shapes,
    inputDtypes: shapes.map((_, i) => dtypes[i] ?? dtypes[0] ?? 'float32'),
    validate: f.validate ? { atol: f.atol, rtol: f.rtol, onFailure: f.unfoldOnFailure ? 'unfold' : 'fail' } : null,
    bench: f.bench ?? null,
  };
}

/** Runs the command; resolves to the exit code (0 all done, 1 some failed, 130/143 stopped by a signal). */
export async function optimizeCommand(args: string[], f: OptimizeFlags, io: Io, argv: string[]): Promise<number> {
  const started = new Date();
  const output = outputMode(f);
  const options = resolveOptions(f);
  const shard = f.shard ? parseShard(f.shard) : null;
  if (f.jobs > 1 && f.bench) io.stderr.write('note: --jobs > 1 runs benchmarks side by side; latency figures will be noisier\n');
  checkDevice(options.device);
  if (f.threads) setNumThreads(f.threads);
  const exclude = output.kind === 'dir' ? realPathOf(output.dir) : undefined;
  const all = discover(args, { glob: f.glob ?? DEFAULT_GLOB, skipOwnOutputs: output.kind === 'beside', exclude });
  if (all.length === 0) throw new UsageError(`No TorchScript files (${f.glob ?? DEFAULT_GLOB}) under ${args.join(', ')}`);
  const inputs = takeShard(all, shard);
  checkPlan(inputs, output);
  if (f.report) checkWritableFile(f.report, '--report');
  if (f.reportHtml) checkWritableFile(f.reportHtml, '--report-html');
  const optionsKey = optionsKeyOf(options);
  const samples = options.inputShapes.length ? await sampleInputs(options.inputShapes, options.inputDtypes as DType[], options.device) : [];

  const human = f.json ? io.stderr : io.stdout;
  const style = io.stderr.isTTY && !f.quiet && !f.verbose && !f.json ? 'bar' : 'lines';
  const progress = new Progress({ style, total: inputs.length, out: human, verbose: Boolean(f.verbose) });
  const controller = new AbortController();
  let signalName: NodeJS.Signals | undefined;
  const inFlight = new Set<string>();
  const onSignal = (sig: NodeJS.Signals) => {
    if (!signalName) {
      signalName = sig;
      controller.abort(new Interrupted());
      progress.log(`Stopping (${sig}): the steps in progress finish, nothing partial is written. Press Ctrl-C again to quit at once.`);
      return;
    }
    progress.stop();
    for (const out of inFlight) removeOwnTemporaries(out);
    for (const r of [f.report, f.reportHtml]) if (r) removeOwnTemporaries(path.resolve(r));
    io.stderr.write('Quit at once: outputs in progress were not written.\n');
    process.exit(sig === 'SIGTERM' ? 143 : 130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let results;
  try {
    results = await runBatch(inputs, {
      options, optionsKey, output, dryRun: Boolean(f.dryRun), resume: Boolean(f.resume), jobs: f.jobs,
      load: { verify: Boolean(f.verify), isolate: Boolean(f.isolate) },
      memoryBudget: f.maxMemory ?? defaultMemoryBudget(), samples, signal: controller.signal, inFlight,
      onStart: (i) => progress.start(i.display), onFinish: (r) => progress.finish(r),
    });
  } catch (e) {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    throw e;
  } finally {
    progress.stop();
    for (const t of samples) t.dispose();
  }
  // The handlers stay until the reports are written: a second Ctrl-C in
  // between still exits 130 and removes the report's temporary file.
  try {
    return await finish(results);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }

  async function finish(results: InputResult[]): Promise<number> {
    const finished = new Date();
    const count = (s: string) => results.filter((r) => r.status === s).length;
    const report: OptimizeRunReport = {
      schema: REPORT_SCHEMA, torchfold: versions.torchfold, libtorch: versions.libtorch, node: process.version,
      platform: `${process.platform}-${process.arch}`, threads: getNumThreads(), jobs: f.jobs, command: argv,
      options, optionsKey, shard, dryRun: Boolean(f.dryRun), interrupted: Boolean(signalName),
      startedAt: started.toISOString(), finishedAt: finished.toISOString(), durationMs: finished.getTime() - started.getTime(),
      totals: { inputs: results.length, done: count('done'), failed: count('failed'), upToDate: count('up-to-date'), interrupted: count('interrupted') },
      results,
    };
    const json = JSON.stringify(report, null, 2) + '\n';
    let writeFailed = false;
    for (const [file, text] of [[f.report, () => json], [f.reportHtml, () => renderHtml(report)]] as const) {
      if (!file) continue;
      try {
        await writeFileAtomic(path.resolve(file), text());
      } catch (e) {
        writeFailed = true;
        io.stderr.write(`error: ERR_IO: could not write ${file}: ${(e as Error).message}\n`);
      }
    }
    if (f.json) io.stdout.write(json);
    if (!f.quiet && !f.json && results.length) human.write(summaryTable(report, Boolean(f.color)) + '\n');
    human.write(totalsLine(report) + '\n');
    for (const [file, what] of [[f.report, 'report'], [f.reportHtml, 'HTML report']] as const) {
      if (file) human.write(`${what}: ${file}\n`);
    }
    if (signalName) return signalName === 'SIGTERM' ? 143 : 130;
    return report.totals.failed > 0 || writeFailed ? 1 : 0;
  }
}
