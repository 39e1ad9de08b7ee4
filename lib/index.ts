/**
 * torchfold: TorchScript in Node through libtorch.
 *
 *   const tf = require('torchfold');
 *   const m = await tf.load('model.pt');
 *   const y = await m.forward(tf.Tensor.from(new Float32Array(3 * 64 * 64), [1, 3, 64, 64]));
 */
export { load, ScriptModule } from './module';
export type { LoadOptions, NamedModule, TensorInfo } from './module';
export { Tensor } from './tensor';
export type { DType, TensorData, TensorFromOptions } from './tensor';
export type { TorchValue } from './values';
export type { FuseOptions, ValidateOptions, BenchmarkOptions, SampleInput } from './fuse';
export type { FuseReport, PairReport, ValidationReport, BenchmarkReport, LatencyStats } from './report';
export { TorchfoldError } from './errors';
export type { ErrorCode } from './errors';
export { cuda, loadLibrary, setNumThreads, getNumThreads, versions } from './runtime';
export type { Versions } from './runtime';
