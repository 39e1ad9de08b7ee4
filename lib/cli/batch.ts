/**
 * The batch behind `torchfold optimize`: one checkpoint at a time per job,
 * several jobs within a memory budget, every failure contained to its input,
 * outputs written atomically with their provenance inside, and a stop on
 * Ctrl-C that leaves no partial file.
 */
import { createHash, randomBytes } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { TorchfoldError } from '../errors';
import type { FuseOptions } from '../fuse';
import { load, readExtraFiles, ScriptModule } from '../module';
import type { FuseReport } from '../report';
import { versions } from '../runtime';
import type { Tensor } from '../tensor';
import { displayPath, Input, OutputMode, outputFor } from './inputs';
import { InputResult, PROVENANCE_FILE, PROVENANCE_SCHEMA, Provenance, ResolvedOptions, ResultSummary } from './report';

/** Thrown into a job when the run is being stopped. */
export class Interrupted extends Error {
  constructor() { super('interrupted'); this.name = 'Interrupted'; }
}

export interface BatchOptions {
  options: ResolvedOptions;
  optionsKey: string;
  /** How inputs are opened (--verify, --isolate); not part of the options key: outputs do not depend on them. */
  load: { verify: boolean; isolate: boolean };
  output: OutputMode;
  dryRun: boolean;
  resume: boolean;
  jobs: number;
  /** Bytes the running jobs may together be estimated to use. */
  memoryBudget: number;
  /** Sample inputs for validate/optimize/bench (empty when none were given). */
  samples: Tensor[];
  signal: AbortSignal;
  /** Outputs being written right now (for a forced exit to clean up after). */
  inFlight: Set<string>;
  onStart(input: Input): void;
  onFinish(result: InputResult): void;
}

/**
 * Peak memory of one job, estimated from the checkpoint's size: the loaded
 * module, the private copy fusing works on and the fused result (3×), plus
 * the optimize candidates with --optimize (6×: frozen, optimize_for_inference's
 * oneDNN weights and channels_last weights are copies; the other candidates
 * share constants with them), plus 64 MiB for activations and the runtime.
 */
export function estimateJobBytes(fileBytes: number, optimize: boolean): number {
  return fileBytes * (optimize ? 6 : 3) + 64 * 2 ** 20;
}

/** What the machine can give: free memory, or the cgroup's limit when lower; 80% of it. */
export function defaultMemoryBudget(): number {
  let free = os.freemem();
  const limit = typeof process.constrainedMemory === 'function' ? process.constrainedMemory() : 0;
  if (limit && limit > 0 && limit < Number.MAX_SAFE_INTEGER) free = Math.min(free, limit - process.memoryUsage.rss());
  return Math.max(0, Math.floor(free * 0.8));
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of fs.createReadStream(file, { highWaterMark: 1 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Canonical JSON: keys sorted, so the same options always hash the same. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonicalJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}

export function optionsKeyOf(options: ResolvedOptions): string {
  return createHash('sha256').update(canonicalJson({ torchfold: versions.torchfold, options })).digest('hex');
}

/**
 * The temporary name this process writes beside `file` before a rename or
 * link (the native save names its temporary folder the same way):
 * .NAME.tmp-PID-RANDOM. Without `random`, the prefix that finds them all.
 */
function temporaryName(file: string, random = true): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${random ? randomBytes(4).toString('hex') : ''}`);
}

/**
 * Removes temporaries of `file` (and of its backup) that a killed process left
 * behind: .NAME.tmp-PID-* and .NAME.bak.tmp-PID-* whose PID no longer runs.
 * Those of this process and of live ones are left alone. (A process in another
 * PID namespace writing to a shared folder looks dead from here.)
 */
export function removeStaleTemporaries(file: string): void {
  const dir = path.dirname(file);
  const base = path.basename(file);
  let names: string[] = [];
  try { names = fs.readdirSync(dir); } catch { return; }
  for (const n of names) {
    const m = /^\.(.+)\.tmp-(\d+)-[0-9a-f]*$/.exec(n);
    if (!m || (m[1] !== base && m[1] !== `${base}.bak`)) continue;
    const pid = Number(m[2]);
    if (pid === process.pid || alive(pid)) continue;
    fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Writes a file atomically: a temporary file in the same folder, flushed, then renamed over the target. */
export async function writeFileAtomic(file: string, data: string | Buffer): Promise<void> {
  removeStaleTemporaries(file);
  const tmp = temporaryName(file);
  try {
    const fh = await fs.promises.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Backs `file` up beside itself without ever replacing an earlier backup:
 * NAME.bak, else NAME.bak.1, NAME.bak.2, ... A temporary copy is flushed and
 * then hard-linked to the free name (link fails rather than overwrite).
 */
async function backupOf(file: string): Promise<string> {
  removeStaleTemporaries(file);
  const tmp = temporaryName(`${file}.bak`);
  try {
    await fs.promises.copyFile(file, tmp, fs.constants.COPYFILE_EXCL);
    const fh = await fs.promises.open(tmp, 'r');
    try { await fh.sync(); } finally { await fh.close(); }
    for (let n = 0; ; n++) {
      const target = `${file}.bak${n ? `.${n}` : ''}`;
      try {
        await fs.promises.link(tmp, target);
        return target;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || n >= 1000) throw e;
      }
    }
  } finally {
    await fs.promises.rm(tmp, { force: true });
  }
}

/** Temporary files and folders this process may be writing beside `target` (removed on a forced exit). */
export function removeOwnTemporaries(target: string): void {
  const dir = path.dirname(target);
  const prefixes = [temporaryName(target, false), temporaryName(`${target}.bak`, false)].map((p) => path.basename(p));
  let names: string[] = [];
  try { names = fs.readdirSync(dir); } catch { return; }
  for (const n of names) {
    if (prefixes.some((p) => n.startsWith(p))) fs.rmSync(path.join(dir, n), { recursive: true, force: true });
  }
}

function errorOf(e: unknown): { code: string; message: string } {
  if (e instanceof TorchfoldError) return { code: e.code, message: e.message };
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.syscall) {
    const code = err.code === 'ENOENT' ? 'ERR_FILE_NOT_FOUND' : err.code === 'EISDIR' ? 'ERR_NOT_A_FILE'
      : err.code === 'EACCES' || err.code === 'EPERM' ? 'ERR_FILE_UNREADABLE' : 'ERR_IO';
    return { code, message: err.message };
  }
  return { code: 'ERR_INTERNAL', message: e instanceof Error ? (e.stack ?? e.message) : String(e) };
}

export function summarize(report: FuseReport): ResultSummary {
  const chosen = report.optimize?.candidates.find((c) => c.name === report.optimize!.chosen);
  const input = report.optimize?.candidates.find((c) => c.name === 'input');
  const maxAbsError = report.validation?.maxAbsError ?? chosen?.validation?.maxAbsError ?? null;
  let before: number | null = null, after: number | null = null;
  if (report.benchmark) [before, after] = [report.benchmark.before.medianMs, report.benchmark.after.medianMs];
  else if (input?.latency && chosen?.latency) [before, after] = [input.latency.medianMs, chosen.latency.medianMs];
  const speedup = report.benchmark ? report.benchmark.speedup : chosen?.speedup ?? null;
  return {
    folded: report.folded,
    skipped: report.skipped,
    absorbed: report.absorbed.filter((a) => a.status === 'folded').length,
    batchNormsBefore: report.batchNorms.before,
    batchNormsAfter: report.batchNorms.after,
    maxAbsError,
    latencyBeforeMs: before,
    latencyAfterMs: after,
    speedup: speedup ?? (before !== null && after !== null && after > 0 ? before / after : null),
    chosen: report.optimize?.chosen ?? null,
  };
}

function fuseOptionsOf(o: ResolvedOptions, samples: Tensor[], signal: AbortSignal): FuseOptions {
  const f: FuseOptions = { mode: o.mode, constants: o.constants, treatTrainingAsEval: o.treatTrainingAsEval, signal };
  if (o.modules) f.modules = o.modules;
  if (o.validate) {
    f.validate = { inputs: samples, atol: o.validate.atol, rtol: o.validate.rtol,
      onFailure: o.validate.onFailure === 'unfold' ? 'unfold' : 'throw' };
  }
  if (o.bench) f.benchmark = { inputs: samples, iterations: o.bench, warmup: Math.min(5, Math.max(1, Math.ceil(o.bench / 10))) };
  if (o.optimize) f.optimize = { inputs: samples, ...(o.validate ? { atol: o.validate.atol, rtol: o.validate.rtol } : {}) };
  return f;
}

async function upToDate(out: string, inputSha: string, b: BatchOptions): Promise<Provenance | null> {
  try {
    await fs.promises.access(out);
    const files = await readExtraFiles(out, [PROVENANCE_FILE]);
    const p = JSON.parse(files[PROVENANCE_FILE] ?? 'null') as Provenance | null;
    if (!p || p.schema !== PROVENANCE_SCHEMA || p.optionsKey !== b.optionsKey) return null;
    // In place, the file is the output: its provenance names the original's bytes.
    return b.output.kind === 'in-place' || p.input.sha256 === inputSha ? p : null;
  } catch {
    return null;
  }
}

async function processOne(input: Input, b: BatchOptions): Promise<InputResult> {
  const out = b.dryRun ? null : outputFor(input, b.output);
  const r: InputResult = {
    input: input.display, output: out ? displayPath(out) : null, status: 'done', inputBytes: null, inputSha256: null,
    outputBytes: null, outputSha256: null, backup: null, timings: { hash: 0, load: 0, fuse: 0, save: 0, total: 0 },
    summary: null, report: null, error: null,
  };
  const t0 = performance.now();
  let module: ScriptModule | undefined, fused: ScriptModule | undefined;
  try {
    if (b.signal.aborted) throw new Interrupted();
    const st = await fs.promises.stat(input.file);
    if (st.isDirectory()) throw new TorchfoldError(`${input.display} is a directory, not a TorchScript file`, 'ERR_NOT_A_FILE');
    r.inputBytes = st.size;
    let t = performance.now();
    r.inputSha256 = await sha256File(input.file);
    r.timings.hash = performance.now() - t;
    if (b.resume && out) {
      const p = await upToDate(out, r.inputSha256, b);
      if (p) {
        r.status = 'up-to-date';
        r.summary = { ...p.summary, maxAbsError: null, latencyBeforeMs: null, latencyAfterMs: null, speedup: null };
        return r;
      }
    }
    if (b.signal.aborted) throw new Interrupted();
    t = performance.now();
    // recipe: false: the file's own (portable) module is what gets optimized; a recipe's run-time steps
    // (e.g. optimize_for_inference's unsaveable constants) would not survive fusing and saving again.
    module = await load(input.file, { device: b.options.device, ...b.load, recipe: false });
    r.timings.load = performance.now() - t;
    if (b.signal.aborted) throw new Interrupted();
    t = performance.now();
    if (b.dryRun) {
      const { graph: _g, dot: _d, ...report } = await module.inspect({
        mode: b.options.mode, constants: b.options.constants, treatTrainingAsEval: b.options.treatTrainingAsEval,
        ...(b.options.modules ? { modules: b.options.modules } : {}) });
      r.report = report;
    } else {
      const res = await module.fuse(fuseOptionsOf(b.options, b.samples, b.signal));
      fused = res.module;
      r.report = res.report;
      if (res.report.validation && !res.report.validation.passed) {
        throw new TorchfoldError(`Validation failed after unfolding: max abs error ${res.report.validation.maxAbsError}`, 'ERR_VALIDATION');
      }
    }
    r.timings.fuse = performance.now() - t;
    r.summary = summarize(r.report);
    if (!out || !fused) return r;
    if (b.signal.aborted) throw new Interrupted();
    // From here the job finishes even when asked to stop: the save is atomic.
    t = performance.now();
    await fs.promises.mkdir(path.dirname(out), { recursive: true });
    if (b.output.kind === 'in-place' && b.output.backup) {
      r.backup = displayPath(await backupOf(input.file));
    }
    const provenance: Provenance = {
      schema: PROVENANCE_SCHEMA, torchfold: versions.torchfold, libtorch: versions.libtorch,
      input: { name: path.basename(input.file), bytes: r.inputBytes, sha256: r.inputSha256 },
      optionsKey: b.optionsKey, options: b.options,
      summary: { folded: r.summary.folded, skipped: r.summary.skipped, absorbed: r.summary.absorbed,
        batchNormsBefore: r.summary.batchNormsBefore, batchNormsAfter: r.summary.batchNormsAfter, chosen: r.summary.chosen },
    };
    await fused.save(out, { extraFiles: { [PROVENANCE_FILE]: JSON.stringify(provenance) } });
    r.timings.save = performance.now() - t;
    r.outputBytes = (await fs.promises.stat(out)).size;
    r.outputSha256 = await sha256File(out);
  } catch (e) {
    if (e instanceof Interrupted || (b.signal.aborted && (e as Error)?.name === 'AbortError')) {
      r.status = 'interrupted';
    } else {
      r.status = 'failed';
      r.error = errorOf(e);
    }
    r.summary = r.status === 'failed' && r.report ? summarize(r.report) : null;
  } finally {
    r.timings.total = performance.now() - t0;
    await fused?.dispose();
    await module?.dispose();
  }
  return r;
}

/** Runs every input, at most `jobs` at once and within the memory budget; results in input order. */
export async function runBatch(inputs: Input[], b: BatchOptions): Promise<InputResult[]> {
  const results = new Array<InputResult | undefined>(inputs.length);
  const inFlight = b.inFlight;
  const sizes = inputs.map((i) => { try { return fs.statSync(i.file).size; } catch { return 0; } });
  let next = 0, running = 0, reserved = 0;
  await new Promise<void>((resolve) => {
    const pump = () => {
      while (next < inputs.length && !b.signal.aborted && running < b.jobs) {
        const k = next;
        const need = estimateJobBytes(sizes[k], b.options.optimize);
        if (running > 0 && reserved + need > b.memoryBudget) break;  // one job always runs
        next++;
        running++;
        reserved += need;
        const input = inputs[k];
        const out = b.dryRun ? null : outputFor(input, b.output);
        if (out) inFlight.add(out);
        b.onStart(input);
        void processOne(input, b).then((r) => {
          results[k] = r;
          running--;
          reserved -= need;
          if (out) inFlight.delete(out);
          try { b.onFinish(r); } finally { pump(); }
        });
      }
      if (running === 0 && (next >= inputs.length || b.signal.aborted)) resolve();
    };
    pump();
  });
  return Array.from(results, (r, k) => r ?? {
    input: inputs[k].display, output: b.dryRun ? null : displayPath(outputFor(inputs[k], b.output)), status: 'interrupted' as const,
    inputBytes: null, inputSha256: null, outputBytes: null, outputSha256: null, backup: null,
    timings: { hash: 0, load: 0, fuse: 0, save: 0, total: 0 }, summary: null, report: null, error: null,
  });
}
