/** The report a fuse (or an inspect) returns: plain JSON. */

export interface PairReport {
  /** The first root method the pair was found in ('forward' or an exported method). */
  method: string;
  /** Every root method that runs it (a pair in _forward_impl also runs under forward). */
  methods: string[];
  /** Module path of the convolution/linear whose weight absorbs the norm ('' for the root). */
  conv: string;
  /** Module path of the normalization (for a functional batch_norm: the owner of its statistics). */
  norm: string;
  /** 'Conv2d', 'ConvTranspose1d', 'Linear', or '... (functional)' for ops outside a conv module. */
  kind: string;
  /** 'BatchNorm2d', 'FrozenBatchNorm2d', or 'batch_norm' for a functional call. */
  normKind: string;
  status: 'folded' | 'skipped';
  /** Why a pair was left alone. */
  reason?: string;
}

export interface ValidationReport {
  /** Largest |fused - original| over every output element of every input. */
  maxAbsError: number;
  /** Largest |fused - original| / max(|original|, tiny) over elements. */
  maxRelError: number;
  atol: number;
  rtol: number;
  passed: boolean;
  inputs: number;
}

export interface LatencyStats {
  medianMs: number;
  p10Ms: number;
  p90Ms: number;
}

export interface BenchmarkReport {
  iterations: number;
  warmup: number;
  threads: number;
  before: LatencyStats;
  after: LatencyStats;
  /** before.medianMs / after.medianMs */
  speedup: number;
}

export interface FuseReport {
  pairs: PairReport[];
  /** Normalizations that run, counted on the module before and on the result after. */
  batchNorms: { before: number; after: number };
  folded: number;
  skipped: number;
  /** Milliseconds per phase; validate and benchmark are 0 when not asked for. */
  timings: { analyze: number; fold: number; rewrite: number; validate: number; benchmark: number; total: number };
  libtorch: string;
  device: string;
  validation?: ValidationReport;
  benchmark?: BenchmarkReport;
}
