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

/** One arithmetic op with a constant absorbed into (or left beside) a conv/linear. */
export interface AbsorbReport {
  method: string;
  methods: string[];
  /** Module path of the conv/linear whose weight absorbs it. */
  conv: string;
  kind: string;
  /** 'mul', 'div', 'add' or 'sub'. */
  op: string;
  /** 'scalar 0.5', "'scale' [8, 1, 1]" (an attribute), 'constant [8, 1, 1]' (baked in a traced graph). */
  constant: string;
  status: 'folded' | 'skipped';
  reason?: string;
}

/** One step of a fuse: which transform ran, in which round, how many pairs it changed and how long it took. */
export interface StepReport {
  name: 'fold' | 'tune' | 'constants';
  round: number;
  changed: number;
  ms: number;
}

export interface CandidateReport {
  /** 'input' (the module as given), 'fused', 'frozen', 'frozen+optimized', 'frozen+onednn' (CPU). */
  name: string;
  /** What the candidate changed, e.g. '53 convolutions on oneDNN, 0 kept'. */
  note?: string;
  /** Whether it can be chosen: valid outputs, every method kept, saveable (unless allowed otherwise). */
  eligible: boolean;
  reason?: string;
  validation?: ValidationReport;
  saveable: boolean;
  saveError?: string;
  methodsKept: boolean;
  buildMs: number;
  /** Every candidate that runs is timed, eligible or not, so the numbers compare side by side. */
  latency?: LatencyStats;
  /** The median over rounds of input time / this candidate's time in the same round (1 for the input). */
  speedup?: number;
}

export interface OptimizeReport {
  chosen: string;
  candidates: CandidateReport[];
  iterations: number;
  warmup: number;
  threads: number;
  inputs: number[][];
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
  /** 'fold' or 'tune'. */
  mode: 'fold' | 'tune';
  pairs: PairReport[];
  /** Constant absorption (options.constants): one entry per arithmetic op with a constant after a conv/linear. */
  absorbed: AbsorbReport[];
  /** Each transform step in order (constants and BatchNorm passes repeat until nothing changes). */
  steps: StepReport[];
  /** Normalizations that run, counted on the module before and on the result after. */
  batchNorms: { before: number; after: number };
  folded: number;
  skipped: number;
  /** Milliseconds per phase; validate and benchmark are 0 when not asked for. */
  timings: { analyze: number; fold: number; rewrite: number; validate: number; benchmark: number; optimize: number; total: number };
  libtorch: string;
  device: string;
  validation?: ValidationReport;
  benchmark?: BenchmarkReport;
  optimize?: OptimizeReport;
}

/** What toHalf() did with each Linear/Conv layer. */
export interface HalfLayerReport {
  path: string;
  kind: string;
  params: number;
  status: 'converted' | 'skipped';
  reason?: string;
}

export interface HalfReport {
  dtype: 'float16' | 'bfloat16';
  layers: HalfLayerReport[];
  converted: number;
  paramsConverted: number;
  bytesSaved: number;
  callSites: number;
  /** With options.validate: the converted module's outputs against this module's. */
  validation?: ValidationReport;
}

/** Where a value comes from: output `output` of node `node`; node -1 = graph input `input` (0 is self); output -1 = parameter `input` of block `block` of `node` (a loop body). */
export interface GraphValueRef { node: number; output: number; input: number; block: number }
/** Where a value goes: input `input` of node `node` (block -1); node -1 = the method's return number `input`; block >= 0 = returned by that block of `node`. */
export interface GraphUse { node: number; input: number; block: number }
export interface GraphValue {
  name: string;
  type: string;
  /** Known with inspect({ inputShapes }) (propagated) or from traced types. */
  shape?: number[];
  dtype?: string;
  uses: GraphUse[];
}
export interface GraphNode {
  index: number;
  /** 'aten::conv2d', 'prim::CallMethod', ... */
  kind: string;
  /** Module path that runs it ('' for the root). */
  module: string;
  /** CallMethod: '<path>.<method>'; CallFunction: the function's name. */
  callee?: string;
  /** Source location, file:line:col. */
  scope?: string;
  /** Enclosing node (prim::If / prim::Loop) and which of its blocks; -1 at top level. */
  parent: number;
  block: number;
  inputs: GraphValueRef[];
  outputs: GraphValue[];
  /** prim::Constant: its value, briefly. */
  constant?: string;
}
export interface GraphReport {
  method: string;
  inlined: boolean;
  inputs: GraphValue[];
  outputs: GraphValueRef[];
  /** Depth-first, nested blocks right after their owner. */
  nodes: GraphNode[];
}

/** inspect(): the fuse analysis plus the method's graph and Graphviz DOT text with the pairs highlighted. */
export interface InspectReport extends FuseReport {
  graph: GraphReport;
  /** Folded pairs filled green, skipped ones orange. */
  dot: string;
}
