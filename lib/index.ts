/**
 * torchfold: TorchScript in Node through libtorch. Load a model with
 * {@link load}, run it with {@link ScriptModule.forward}, fold its
 * conv → BatchNorm pairs with {@link ScriptModule.fuse}.
 *
 * @example
 * ```ts
 * const tf = require('torchfold');
 * const m = await tf.load('model.pt');
 * const y = await m.forward(tf.Tensor.from(new Float32Array(3 * 64 * 64), [1, 3, 64, 64]));
 * ```
 *
 * @sortStrategy kind, alphabetical
 * @packageDocumentation
 */
export { load, readExtraFiles, verifyFile, ScriptModule } from './module';
export type { IsolateOptions } from './isolate';
export type { InspectOptions, LoadOptions, NamedModule, SaveOptions, TensorInfo } from './module';
export type { HalfOptions } from './half';
export type { RecipeReport } from './recipe';
export { Tensor } from './tensor';
export type { DType, TensorData, TensorFromOptions } from './tensor';
export type { TorchValue } from './values';
export type { FuseOptions, OptimizeOptions, ValidateOptions, BenchmarkOptions, SampleInput } from './fuse';
export type {
  FuseReport, PairReport, AbsorbReport, UnpairedReport, RankGuardReport, SiteCopyReport, StepReport, ValidationReport, BenchmarkReport, LatencyStats, OptimizeReport,
  CandidateReport, HalfReport, HalfLayerReport, InspectReport, GraphReport, GraphNode, GraphValue, GraphValueRef, GraphUse,
} from './report';
export { TorchfoldError } from './errors';
export type { ErrorCode } from './errors';
export { cuda, loadLibrary, setNumThreads, getNumThreads, setComputeThreads, getComputeThreads, versions } from './runtime';
export type { Versions } from './runtime';
