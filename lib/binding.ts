/**
 * The only file that loads the native addon. It describes the raw native
 * surface and turns a failed load into one error that lists causes and fixes.
 */
import * as fs from 'fs';
import * as path from 'path';
import { explainLoadFailure, LoadAttempt, loadAddon } from './addon-load';
import { TorchfoldError } from './errors';

export type NativeValue =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | NativeTensor
  | NativeValue[]
  | Map<unknown, NativeValue>
  | { [key: string]: NativeValue };

/** A parameter or buffer of a module, described without its data (`parameters()`, `buffers()`). */
export interface TensorInfo {
  /** Dotted name, e.g. `'layer1.0.bn1.running_mean'`. */
  name: string;
  /** The sizes of each dimension. */
  shape: number[];
  /** The element type, e.g. `'float32'`. */
  dtype: string;
  /** Where it lives: `'cpu'` or `'cuda:N'`. */
  device: string;
}

export interface NativeTensor {
  shape(): number[];
  dtype(): string;
  device(): string;
  toBuffer(): ArrayBuffer;
  to(device: string): Promise<NativeTensor>;
  dispose(): void;
  disposed(): boolean;
}

export interface NativeModule {
  run(method: string, inputs: NativeValue[]): Promise<NativeValue>;
  save(path: string, extraFiles?: Record<string, string>): Promise<void>;
  clone(): Promise<NativeModule>;
  fuse(options: { dryRun?: boolean; treatTrainingAsEval?: boolean; exclude?: string[]; excludeReason?: string;
    mode?: 'fold' | 'tune'; constants?: boolean; modules?: string[][] }): Promise<import('./fuse').NativeFuseResult>;
  freeze(options: { optimize: boolean }): Promise<{ module: NativeModule; saveable: boolean; saveError?: string; buildMs: number }>;
  onednn(): Promise<{ module: NativeModule; saveable: boolean; saveError?: string; buildMs: number; rewritten: number;
    kept: number; keptReasons: string[] }>;
  benchPeer(kind: string): Promise<{ module: NativeModule; buildMs: number }>;
  portable(o: { freeze: boolean; channelsLast: boolean }): Promise<{ module: NativeModule; buildMs: number; channelsLastWeights: number; saveError?: string }>;
  applyRunTime(o: { optimizeForInference: boolean; llga: boolean; nnc: boolean }): Promise<{ module: NativeModule; buildMs: number }>;
  jitSwitches(): string;
  benchTimeForward(inputs: NativeValue[], iterations: number, warmup: number): Promise<number[]>;
  benchToDtype(dtype: string): Promise<NativeModule>;
  describeGraph(options: { method: string; inlined: boolean; shapes: number[][];
    highlights: { conv: string; norm: string; folded: boolean }[] }): Promise<{ graph: import('./report').GraphReport; dot: string }>;
  toHalf(options: { dtype: string; minParams: number; layers: string[] }):
    Promise<{ module: NativeModule; report: import('./report').HalfReport }>;
  to(device: string): Promise<NativeModule>;
  methods(): string[];
  graph(method: string, inlined?: boolean): string;
  namedTensors(): Record<string, NativeTensor>;
  namedModules(): { path: string; type: string }[];
  parameters(): TensorInfo[];
  buffers(): TensorInfo[];
  device(): string;
  training(): boolean;
  setTraining(on: boolean): void;
  inFlight(): number;
  dispose(): void;
  disposed(): boolean;
}

export interface NativeBinding {
  NativeModule: new () => NativeModule;
  NativeTensor: new () => NativeTensor;
  setErrorFactory(factory: (message: string, code: string) => Error): void;
  load(path: string, device: string, verify?: boolean): Promise<NativeModule>;
  verifyFile(path: string): Promise<string[]>;
  tensorFromBuffer(bytes: Uint8Array, dtype: string, shape: number[]): NativeTensor;
  loadLibrary(path: string): Promise<void>;
  readExtraFiles(path: string, names: string[]): Promise<Record<string, string>>;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  setComputeThreads(n: number): void;
  getComputeThreads(): number;
  fusers(): { llga: string; nnc: string };
  cudaIsAvailable(): boolean;
  /** Throws ERR_DEVICE_UNAVAILABLE, with the reason, when the device named is not present. */
  checkDevice(device: string): void;
  cudaDeviceCount(): number;
  versions(): { libtorch: string; libtorchHeaders: string; napi: number; cudaBuild: boolean };
}

/** The package root: the nearest folder above this file with torchfold's package.json. */
export function packageRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try {
        if ((JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: unknown }).name === 'torchfold') return dir;
      } catch {
        /* unreadable package.json: keep looking */
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(__dirname, '..');
    dir = parent;
  }
}

function loadBinding(): NativeBinding {
  const root = packageRoot();
  const result = loadAddon<NativeBinding>(root);
  if ('attempts' in result) {
    const err = new TorchfoldError(explainLoadFailure(root, result.attempts), 'ERR_NATIVE_LOAD');
    (err as Error & { attempts?: LoadAttempt[] }).attempts = result.attempts;
    throw err;
  }
  loadedFile = result.file;
  const binding = result.binding;
  binding.setErrorFactory((message, code) => new TorchfoldError(message, code as TorchfoldError['code']));
  return binding;
}

let loadedFile: string | undefined;

/** The addon file that was loaded (undefined before the first load). */
export function addonFile(): string | undefined {
  return loadedFile;
}

let cached: NativeBinding | undefined;

/** The native binding, loaded on first use. */
export function native(): NativeBinding {
  if (!cached) {
    cached = loadBinding();
    warnOnBadThreadCount();
  }
  return cached;
}

/** The addon ignores a TORCHFOLD_NUM_THREADS / TORCHFOLD_COMPUTE_THREADS that is not a count; say so once. */
function warnOnBadThreadCount(): void {
  for (const [name, max] of [['TORCHFOLD_NUM_THREADS', 1024], ['TORCHFOLD_COMPUTE_THREADS', 256]] as const) {
    const v = process.env[name];
    if (v === undefined) continue;
    // The same rule as native/core (strtol: leading blanks and '+' allowed, nothing after the digits).
    const ok = /^\s*\+?\d+$/.test(v) && Number(v) >= 1 && Number(v) <= max;
    if (!ok) process.emitWarning(`${name}=${JSON.stringify(v)} is not a thread count from 1 to ${max}; it is ignored`, { code: name });
  }
}
