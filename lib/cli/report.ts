/**
 * The report `torchfold optimize` writes with --json / --report: one stable,
 * versioned shape, described for validators by schema/optimize-report.schema.json.
 * Fields are only ever added within a schema version.
 */
import type { FuseReport } from '../report';

export const REPORT_SCHEMA = 'torchfold/optimize-report@1';
export const PROVENANCE_SCHEMA = 'torchfold/provenance@1';
/** The extra file torchfold stores inside each output archive (read back by --resume). */
export const PROVENANCE_FILE = 'torchfold.json';

/**
 * - done: optimized and written (or, with --dry-run, analyzed).
 * - failed: an error; nothing was written for it.
 * - up-to-date: --resume found an output made from the same bytes with the same options.
 * - interrupted: Ctrl-C arrived before it finished; nothing was written for it.
 */
export type ResultStatus = 'done' | 'failed' | 'up-to-date' | 'interrupted';

/** The figures of the summary table, for one input. null where not measured. */
export interface ResultSummary {
  folded: number;
  skipped: number;
  /** Constant ops absorbed (--constants). */
  absorbed: number;
  batchNormsBefore: number;
  batchNormsAfter: number;
  /** Largest |output - input module's output| (with --validate, else from --optimize's checks). */
  maxAbsError: number | null;
  /** Medians from --bench (or --optimize's timing of the input module and the chosen candidate). */
  latencyBeforeMs: number | null;
  latencyAfterMs: number | null;
  speedup: number | null;
  /** With --optimize: the candidate kept ('fused', 'frozen', ...). */
  chosen: string | null;
}

export interface InputResult {
  /** The input as found, relative to the working directory when inside it. */
  input: string;
  /** Where the result was (or would be) written; null with --dry-run. */
  output: string | null;
  status: ResultStatus;
  inputBytes: number | null;
  /** sha256 of the input file's bytes (hex): with optionsKey, what --resume compares. */
  inputSha256: string | null;
  outputBytes: number | null;
  outputSha256: string | null;
  /** With --in-place and a backup: where the original bytes were kept. */
  backup: string | null;
  /** Milliseconds: hash, load, fuse (analysis, rewrite, validate, optimize, bench), save, total. */
  timings: { hash: number; load: number; fuse: number; save: number; total: number };
  summary: ResultSummary | null;
  /** The library's fuse report (FuseReport in the API docs). */
  report: FuseReport | null;
  error: { code: string; message: string } | null;
}

export interface OptimizeRunReport {
  schema: typeof REPORT_SCHEMA;
  torchfold: string;
  libtorch: string;
  node: string;
  platform: string;
  /** Intra-op threads libtorch used. */
  threads: number;
  jobs: number;
  command: string[];
  /** The options that decide the outputs, as resolved (defaults filled in). */
  options: ResolvedOptions;
  /** sha256 of the canonical JSON of `options` and the torchfold version. */
  optionsKey: string;
  shard: { index: number; count: number } | null;
  dryRun: boolean;
  interrupted: boolean;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  totals: { inputs: number; done: number; failed: number; upToDate: number; interrupted: number };
  results: InputResult[];
}

/** Options that change what is written; part of the resume key. */
export interface ResolvedOptions {
  mode: 'fold' | 'tune';
  constants: boolean;
  optimize: boolean;
  modules: string[][] | null;
  treatTrainingAsEval: boolean;
  device: string;
  inputShapes: number[][];
  inputDtypes: string[];
  /** --validate: the tolerances given (absent: by output dtype, 1e-4/1e-3, or 1e-2/1e-2 for float16/bfloat16). */
  validate: { atol?: number; rtol?: number; onFailure: 'fail' | 'unfold' } | null;
  bench: number | null;
}

/** What each output archive carries in extra/torchfold.json. */
export interface Provenance {
  schema: typeof PROVENANCE_SCHEMA;
  torchfold: string;
  libtorch: string;
  input: { name: string; bytes: number; sha256: string };
  optionsKey: string;
  options: ResolvedOptions;
  summary: Pick<ResultSummary, 'folded' | 'skipped' | 'absorbed' | 'batchNormsBefore' | 'batchNormsAfter' | 'chosen'>;
}
