/** The report a fuse (or an inspect) returns: plain JSON. */

/**
 * One conv/linear → normalization pair found in the module, and whether it was
 * folded. A pair that runs in several methods is listed once.
 */
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
  /** `'folded'` (in an inspect: would fold) or `'skipped'`, with a `reason`. */
  status: 'folded' | 'skipped';
  /** Why a pair was left alone, in words; present exactly when skipped. See docs/report.md for the reasons. */
  reason?: string;
  /**
   * Present when the fold is exact for one input rank only and was made behind a guard: for input of `rank`
   * dimensions the folded operator runs alone; for any other rank the original operator (its weight and bias kept as
   * graph constants, `bytes` of them) and the original normalization or op run, so the result is exact for every input
   * the original accepts. Linear -> BatchNorm1d whose input may be 3-D, and a `[1, C, 1, 1]` constant after a
   * convolution whose input may be unbatched.
   */
  rankGuard?: RankGuardReport;
  /**
   * Present when the conv's weight is also read elsewhere (the same conv called again without this normalization, a
   * weight tied to another, different normalizations at different call sites): this call site got its own copy of the
   * conv with the folded weight and bias as graph constants (`bytes` of them), and the module's own weight and bias are
   * unchanged for the other readers.
   */
  siteCopy?: SiteCopyReport;
}

/** A fold made as a copy of the conv for one call site (see {@link PairReport.siteCopy}). */
export interface SiteCopyReport {
  /** Bytes of the folded weight and bias the copy adds, as graph constants. */
  bytes: number;
}

/** A fold made behind a rank guard (see {@link PairReport.rankGuard}). */
export interface RankGuardReport {
  /** The input rank the folded operator runs for (2 for a Linear, 4 for a Conv2d with a `[1, C, 1, 1]` constant). */
  rank: number;
  /** Bytes of the original weight and bias kept as graph constants for inputs of other ranks. */
  bytes: number;
}

/** One arithmetic op with a constant absorbed into (or left beside) a conv/linear. */
export interface AbsorbReport {
  /** The first root method the op was found in. */
  method: string;
  /** Every root method that runs it. */
  methods: string[];
  /** Module path of the conv/linear whose weight absorbs it. */
  conv: string;
  /** The conv/linear's kind, as in {@link PairReport.kind}. */
  kind: string;
  /** 'mul', 'div', 'add' or 'sub'. */
  op: string;
  /** 'scalar 0.5', "'scale' [8, 1, 1]" (an attribute), 'constant [8, 1, 1]' (baked in a traced graph). */
  constant: string;
  /** `'folded'` (absorbed into the weight and bias) or `'skipped'`, with a `reason`. */
  status: 'folded' | 'skipped';
  /** Why the op was left alone; present exactly when skipped. */
  reason?: string;
  /** As for a pair: {@link PairReport.rankGuard}. */
  rankGuard?: RankGuardReport;
}

/**
 * A normalization that runs but follows no convolution/linear, so nothing can
 * absorb it (e.g. DenseNet's norm1 after torch.cat). Together with
 * {@link FuseReport.pairs} it accounts for every normalization that runs.
 */
export interface UnpairedReport {
  /** The first root method it was found in. */
  method: string;
  /** Every root method that runs it. */
  methods: string[];
  /** Module path of the normalization (for a functional batch_norm: the owner of its statistics). */
  norm: string;
  /** 'BatchNorm2d', 'FrozenBatchNorm2d', or 'batch_norm' for a functional call. */
  normKind: string;
  /** What its input comes from, in words: "its input comes from aten::cat, not a convolution or linear in 'features.denseblock1.denselayer1' (forward)". */
  reason: string;
}

/** One step of a fuse: which transform ran, in which round, how many pairs it changed and how long it took. */
export interface StepReport {
  /** The transform: `'fold'`, `'tune'`, or `'constants'` (constant absorption). */
  name: 'fold' | 'tune' | 'constants';
  /** The round, from 1. With `constants`, rounds repeat (at most 8) until one changes nothing. */
  round: number;
  /** How many pairs (or constant ops) this step rewrote. */
  changed: number;
  /** Milliseconds the step took: computing the folded values and rewriting. */
  ms: number;
}

/** One candidate module the optimize step tried. */
export interface CandidateReport {
  /**
   * 'input' (the module as given), 'fused', 'frozen', 'frozen+optimized' (libtorch's
   * optimize_for_inference), and on the CPU 'frozen+onednn' (convolutions on oneDNN,
   * plain tensors), 'frozen+channels_last', 'frozen+llga' (oneDNN Graph fusion, libtorch
   * 2.x), 'frozen+channels_last+llga', 'frozen+nnc' (NNC TensorExpr fusion).
   */
  name: string;
  /** What the candidate changed, e.g. '53 convolutions on oneDNN, 0 kept'. */
  note?: string;
  /** Whether it can be chosen: valid outputs, every method kept, saveable (unless allowed otherwise). */
  eligible: boolean;
  /** Why it is not eligible, or could not be built or run. */
  reason?: string;
  /** Its outputs against the input module's, on the optimize sample inputs (absent when it did not run). */
  validation?: ValidationReport;
  /**
   * Whether it can be saved and loaded back: as itself, or (with `runTimeSteps`) as its
   * portable form plus a recipe that torchfold's load() re-applies.
   */
  saveable: boolean;
  /**
   * Steps that a save cannot hold, redone by {@link load} from the recipe saved beside the
   * portable form: 'optimize_for_inference', 'llga', 'nnc'. PyTorch loading the same file
   * gets the portable form (frozen, folded; correct, without these steps).
   */
  runTimeSteps?: string[];
  /** Why saving or loading it back failed, when not saveable. */
  saveError?: string;
  /** Whether it still has every method of the input module. */
  methodsKept: boolean;
  /** Milliseconds spent building it (0 for 'input' and 'fused'). */
  buildMs: number;
  /** Every candidate that runs is timed, eligible or not, so the numbers compare side by side. */
  latency?: LatencyStats;
  /** The median over rounds of input time / this candidate's time in the same round (1 for the input). */
  speedup?: number;
}

/** What `fuse({ optimize })` tried and kept. */
export interface OptimizeReport {
  /** The name of the candidate kept: the fastest eligible one (the earlier one on a tie). */
  chosen: string;
  /** Every candidate, in the order tried (see {@link CandidateReport.name}). */
  candidates: CandidateReport[];
  /** Timed rounds; each ran every timed candidate once. */
  iterations: number;
  /** Untimed rounds before them. */
  warmup: number;
  /** libtorch's intra-op threads during the timing. */
  threads: number;
  /** The shapes of the sample inputs. */
  inputs: number[][];
}

/**
 * A module's outputs against the original's on the same inputs: one `forward`
 * call, every element of every output tensor.
 */
export interface ValidationReport {
  /**
   * Largest |result − original| over the output elements (absolute, in the
   * outputs' units). Infinity when an output is NaN where the original's is
   * not, or infinite (null once serialized to JSON).
   */
  maxAbsError: number;
  /** Largest |result − original| / max(|original|, 1e-30) over the elements (a ratio, not percent). */
  maxRelError: number;
  /** The absolute tolerance applied. */
  atol: number;
  /** The relative tolerance applied. */
  rtol: number;
  /** Whether every element satisfied |result − original| ≤ atol + rtol·|original|. */
  passed: boolean;
  /** The number of input tensors of the call. */
  inputs: number;
}

/** Latency of one module over the timed calls, in milliseconds of wall time. */
export interface LatencyStats {
  /** Median call, ms. */
  medianMs: number;
  /** 10th percentile, ms. */
  p10Ms: number;
  /** 90th percentile, ms. */
  p90Ms: number;
}

/** What `fuse({ benchmark })` measured: both modules, interleaved on the same inputs. */
export interface BenchmarkReport {
  /** Timed calls of each module. */
  iterations: number;
  /** Untimed calls of each module first. */
  warmup: number;
  /** libtorch's intra-op threads during the timing. */
  threads: number;
  /** The input module. */
  before: LatencyStats;
  /** The result (after optimize, when it ran). */
  after: LatencyStats;
  /** before.medianMs / after.medianMs */
  speedup: number;
}

/**
 * What `fuse()` did (or, from `inspect()`, would do): every pair found and
 * whether it folded, the constant ops, the steps, the counts and the times.
 * Plain JSON; see docs/report.md and schema/fuse-report.schema.json.
 */
export interface FuseReport {
  /** 'fold' or 'tune'. */
  mode: 'fold' | 'tune';
  /** Every conv/linear → normalization pair found, folded or skipped. */
  pairs: PairReport[];
  /** Constant absorption (options.constants): one entry per arithmetic op with a constant after a conv/linear. */
  absorbed: AbsorbReport[];
  /** Normalizations that run but are in no pair (nothing to fold them into), each with its reason. */
  unpaired: UnpairedReport[];
  /**
   * Module paths of folded normalizations replaced by an empty `torchfold.Identity` module under the same name: their
   * parameters and buffers are gone from the result, and `Sequential` indexing still works. A folded norm stays when
   * other code still reads it. Empty in tune mode and from `inspect()`.
   */
  replaced: string[];
  /** Each transform step in order (constants and BatchNorm passes repeat until nothing changes). */
  steps: StepReport[];
  /** Normalizations that run, counted on the module before and on the result after. */
  batchNorms: {
    /** In the input module (distinct modules that run). */
    before: number;
    /** In the result; in tune mode and from `inspect()` without `constants`, `before` minus the folded pairs. */
    after: number;
  };
  /** Pairs with status 'folded'. */
  folded: number;
  /** Pairs with status 'skipped'. */
  skipped: number;
  /** Milliseconds per phase; validate, benchmark and optimize are 0 when not asked for. */
  timings: {
    /** Finding the pairs and deciding. */
    analyze: number;
    /** Computing the folded weights and biases (float64). */
    fold: number;
    /** Rewriting the copy's graphs and parameters. */
    rewrite: number;
    /** Validation, including finding the pairs to leave unfolded. */
    validate: number;
    /** The benchmark. */
    benchmark: number;
    /** The optimize step: building, checking and timing the candidates. */
    optimize: number;
    /** All of it, including making the private copy the rewrite works on. */
    total: number;
  };
  /** The libtorch version the addon was built against. */
  libtorch: string;
  /** Where the module's parameters are: 'cpu' or 'cuda:N'. */
  device: string;
  /** With `validate`: the result's outputs against the input module's (after any unfolding). */
  validation?: ValidationReport;
  /** With `benchmark`: latency before and after. */
  benchmark?: BenchmarkReport;
  /** With `optimize`: the candidates and which one was kept. */
  optimize?: OptimizeReport;
}

/** What toHalf() did with each Linear/Conv layer. */
export interface HalfLayerReport {
  /** Module path, e.g. 'layer1.0.fc'. */
  path: string;
  /** Class short name: 'Linear', 'Conv2d', 'ConvTranspose1d', ... */
  kind: string;
  /** Parameter elements of the layer (a count, not bytes). */
  params: number;
  /** 'converted', or 'skipped' with a `reason`. */
  status: 'converted' | 'skipped';
  /** Why the layer was not converted; present exactly when skipped. */
  reason?: string;
}

/** What `toHalf()` did. */
export interface HalfReport {
  /** The half dtype the converted layers store their parameters in. */
  dtype: 'float16' | 'bfloat16';
  /** Every Linear/Conv/ConvTranspose layer, in module order. */
  layers: HalfLayerReport[];
  /** Layers converted. */
  converted: number;
  /** Parameter elements now stored in the half dtype. */
  paramsConverted: number;
  /** Bytes of parameters and buffers saved. */
  bytesSaved: number;
  /** Call sites wrapped in casts. */
  callSites: number;
  /** With options.validate: the converted module's outputs against this module's. */
  validation?: ValidationReport;
}

/** Where a value comes from: output `output` of node `node`; node -1 = graph input `input` (0 is self); output -1 = parameter `input` of block `block` of `node` (a loop body). */
export interface GraphValueRef {
  /** Index of the producing node, or -1 for a graph input. */
  node: number;
  /** Which output of that node; -1 for a block parameter (0, unused, for a graph input). */
  output: number;
  /** Graph input number (node -1), or block parameter number (output -1); otherwise -1. */
  input: number;
  /** The block of `node` whose parameter it is (output -1); otherwise -1. */
  block: number;
}
/** Where a value goes: input `input` of node `node` (block -1); node -1 = the method's return number `input`; block >= 0 = returned by that block of `node`. */
export interface GraphUse {
  /** Index of the using node, or -1 for the method's return. */
  node: number;
  /** Which input of the node (or which returned value). */
  input: number;
  /** -1 for a node input; otherwise the block of `node` that returns the value. */
  block: number;
}
/** A value of the graph: a graph input or a node output. */
export interface GraphValue {
  /** The IR name, as in `graph()` text without the '%'. */
  name: string;
  /** TorchScript type, e.g. 'Tensor', 'int', '__torch__.Net'. */
  type: string;
  /** Known with inspect({ inputShapes }) (propagated) or from traced types. */
  shape?: number[];
  /** A tensor's dtype, where known (as `shape`). */
  dtype?: string;
  /** Every place the value is used. */
  uses: GraphUse[];
}
/** One node of the graph. */
export interface GraphNode {
  /** Its index in {@link GraphReport.nodes}. */
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
  /** Which block of `parent` holds it; -1 at top level. */
  block: number;
  /** Where each input comes from. */
  inputs: GraphValueRef[];
  /** The values it makes. */
  outputs: GraphValue[];
  /** prim::Constant: its value, briefly. */
  constant?: string;
}
/** A method's TorchScript graph as data (`inspect()`'s `graph`). */
export interface GraphReport {
  /** The method described. */
  method: string;
  /** Whether calls into submodules and functions were inlined. */
  inlined: boolean;
  /** The graph inputs, `self` first. */
  inputs: GraphValue[];
  /** Where each returned value comes from. */
  outputs: GraphValueRef[];
  /** Depth-first, nested blocks right after their owner. */
  nodes: GraphNode[];
}

/** inspect(): the fuse analysis plus the method's graph and Graphviz DOT text with the pairs highlighted. */
export interface InspectReport extends FuseReport {
  /** The nodes of the described method's graph, linked to their producers and users. */
  graph: GraphReport;
  /** Folded pairs filled green, skipped ones orange. */
  dot: string;
}
