/**
 * ScriptModule: a loaded TorchScript module. Everything that touches tensors
 * (load, run, save, clone, to) runs on torchfold's compute threads and returns a
 * promise; metadata reads are synchronous and cheap.
 *
 * dispose() makes the module unusable at once (ERR_DISPOSED) but frees the
 * native module only after calls already in flight have settled.
 */
import * as path from 'path';
import { native, NativeModule, NativeValue, TensorInfo } from './binding';
import { rangeError, TorchfoldError, typeError, withCallerStack } from './errors';
import { DEFAULT_ISOLATE_TIMEOUT_MS, IsolateOptions, probeInChild } from './isolate';
import { Tensor } from './tensor';
import { expectKnownKeys, expectOptions, expectString, parseDevice } from './validate';
import { fromNative, toNative, TorchValue } from './values';
import { benchmark, checkFuseOptions, compareOutputs, finishReport, FuseOptions, latencyStats, materializeAsync,
  NativeFuseResult, OptimizeOptions, pairedRatio, Runner, timeRounds } from './fuse';
import { FuseReport, HalfReport, InspectReport, OptimizeReport, ValidationReport } from './report';
import { checkHalfOptions, HalfOptions } from './half';
import { getNumThreads } from './runtime';
import { applyRecipe, checkSample, parseRecipe, RECIPE_FILE, RecipeReport, RecipeSpec } from './recipe';
import { buildCandidates, Candidate } from './candidates';

export type { TensorInfo } from './binding';

/** A module of the tree, as {@link ScriptModule.namedModules} lists it. */
export interface NamedModule {
  /** '' for the root, 'layer1.0.conv1' for a child. */
  path: string;
  /** The module's class, e.g. 'torchvision.models.resnet.BasicBlock' or 'torch.nn.modules.conv.Conv2d'. */
  type: string;
}

/**
 * Options of {@link ScriptModule.inspect}: the analysis options of
 * {@link FuseOptions} plus what the graph description shows. Unknown keys
 * throw a RangeError.
 */
export interface InspectOptions {
  /**
   * Analyze BatchNorms in training mode as foldable with their running
   * statistics, as `fuse({ treatTrainingAsEval: true })` would.
   *
   * @defaultValue `false`
   */
  treatTrainingAsEval?: boolean;
  /**
   * Analyze for `'tune'` mode instead of `'fold'`.
   *
   * @defaultValue `'fold'`
   */
  mode?: 'fold' | 'tune';
  /**
   * Also analyze constant absorption, as `fuse({ constants: true })` would.
   *
   * @defaultValue `false`
   */
  constants?: boolean;
  /**
   * Analyze only these groups, as `fuse({ modules })` would (a group that
   * cannot fold rejects with `ERR_FUSE_GROUP`).
   *
   * @defaultValue `undefined`: every pair
   */
  modules?: string[][];
  /**
   * The method whose graph is described (the analysis always covers every method).
   *
   * @defaultValue `'forward'`
   */
  method?: string;
  /**
   * Inline calls into submodules and functions, so every aten op shows with its module path.
   *
   * @defaultValue `true`
   */
  inlined?: boolean;
  /**
   * One shape per tensor input of the method, in order: shapes are then
   * propagated through the graph ({@link GraphValue.shape}).
   *
   * @defaultValue `[]`: only the shapes a traced graph records
   */
  inputShapes?: number[][];
}

/** Options of {@link ScriptModule.save}. */
export interface SaveOptions {
  /**
   * Files to store beside the model in the archive, under `extra/`, as
   * `name: text`. Names are relative paths of letters, digits, `_`, `.`, `-`
   * and `/`. Read them back with {@link readExtraFiles}, or in PyTorch with
   * `torch.jit.load(f, _extra_files={name: ''})`.
   *
   * @defaultValue `undefined`: no extra files
   */
  extraFiles?: Record<string, string>;
}

const EXTRA_NAME = /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/;

function checkExtraName(name: unknown, where: string): string {
  if (typeof name !== 'string' || !EXTRA_NAME.test(name) || name.split('/').some((p) => p === '.' || p === '..')) {
    throw typeError("a relative file name of letters, digits, '_', '.', '-' and '/'", where, name);
  }
  return name;
}

function checkExtraFiles(files: unknown): Record<string, string> {
  if (files === undefined) return {};
  if (files === null || typeof files !== 'object' || Array.isArray(files)) throw typeError('an object of name: text', 'options.extraFiles', files);
  for (const [k, v] of Object.entries(files)) {
    checkExtraName(k, 'a name in options.extraFiles');
    if (typeof v !== 'string') throw typeError('a string', `options.extraFiles['${k}']`, v);
  }
  return files as Record<string, string>;
}

/**
 * Reads extra files stored in a TorchScript archive (by save({ extraFiles }) or
 * torch.jit.save(..., _extra_files=...)) without loading the model. Names the
 * archive does not hold are absent from the result.
 *
 * @param file - The archive.
 * @param names - Names under `extra/`, e.g. `'torchfold.json'`.
 * @returns The text of each name found.
 * @throws TypeError (`ERR_INVALID_ARG`) for a bad path or name. Rejects with the
 * file errors of {@link load} (`ERR_FILE_NOT_FOUND`, `ERR_NOT_TORCHSCRIPT`, ...).
 */
export function readExtraFiles(file: string, names: string[]): Promise<Record<string, string>> {
  const target = path.resolve(expectString(file, 'path'));
  if (!Array.isArray(names)) throw typeError('an array of names', 'names', names);
  names.forEach((n, i) => checkExtraName(n, `names[${i}]`));
  const binding = native();
  return withCallerStack(() => binding.readExtraFiles(target, names));
}

/** Options of {@link load}. Unknown keys throw a RangeError. */
export interface LoadOptions {
  /**
   * Where parameters and buffers are placed: `'cpu'`, `'cuda'` or `'cuda:N'`
   * (N from 0 to 63). A missing device rejects with `ERR_DEVICE_UNAVAILABLE`.
   *
   * @defaultValue `'cpu'`
   */
  device?: string;
  /**
   * Check every record of the archive against its CRC-32 before loading.
   * PyTorch's reader does not, so a file damaged on disk or in transit can load
   * with other weights; with `verify` it fails with `ERR_FILE_CORRUPT` instead.
   * Costs one extra read of the file. (Code and pickle records are always checked.)
   *
   * @defaultValue `false`
   */
  verify?: boolean;
  /**
   * Open the file in a child process first, so a file that crashes libtorch
   * takes down only that process: the load then fails with `ERR_FILE_CORRUPT`.
   * `true` or `{ timeoutMs }` ({@link IsolateOptions}) turn it on. Costs a
   * process start (once; the child stays warm for 5 s) and a second load; use it
   * for files you do not trust.
   *
   * @defaultValue `false`
   */
  isolate?: boolean | IsolateOptions;
  /**
   * A file saved by torchfold after `fuse({ optimize })` may hold a recipe
   * (`extra/torchfold/recipe.json`): the steps that cannot be saved, such as
   * optimize_for_inference or oneDNN Graph fusion. torchfold redoes them on
   * the CPU, checks the result against the file's module on a stored sample
   * and keeps it only if it matches ({@link ScriptModule.recipe} says what
   * happened and what it cost). `false` loads the file's module as saved.
   *
   * @defaultValue `true`
   */
  recipe?: boolean;
}

/** A module made by a recipe: the portable form it was made from (null: itself) and the recipe, saved together. */
interface AttachedRecipe { portable: ScriptModule | null; spec: RecipeSpec; report?: RecipeReport }

let handleOf: (m: ScriptModule) => NativeModule;
let attachRecipe: (m: ScriptModule, r: AttachedRecipe) => void;

/**
 * forward() on a native handle taken when a call started. fuse() and toHalf()
 * run the module for validation, benchmark and optimize through this, not
 * through the public forward(): that one checks the disposed flag, so a
 * dispose() while they are in flight would cut them short. The handle stays
 * alive until the tracked call settles (dispose() waits for it).
 */
function forwardOn(handle: NativeModule): Runner {
  const tensorCtor = native().NativeTensor;
  return async (xs) => fromNative(await handle.run('forward', xs.map((x, i) => toNative(x, `inputs[${i}]`))), tensorCtor);
}

/**
 * @internal For tests and benchmarks: a module made from `portable` by run-time
 * steps, carrying its recipe as `fuse({ optimize })`'s results do (save() writes
 * `portable` and the recipe; disposing it disposes `portable`). Not exported from the package.
 */
export async function withRecipe(portable: ScriptModule, spec: RecipeSpec): Promise<ScriptModule> {
  const made = new ScriptModule((await handleOf(portable).applyRunTime(spec.runTime)).module);
  attachRecipe(made, { portable, spec });
  return made;
}

/** @internal The native handle behind a module (benchmarks); ERR_DISPOSED once disposed. Not exported from the package. */
export function nativeHandle(m: ScriptModule): NativeModule { return handleOf(m); }

/**
 * A loaded TorchScript module. Everything that touches tensors (running,
 * saving, copying, fusing) runs on torchfold's compute threads and returns a promise;
 * metadata reads are synchronous and cheap. Made by {@link load}, or by
 * `clone()`, `to()`, `fuse()` and `toHalf()` of another module, which never
 * change the module they are called on.
 *
 * {@link ScriptModule.dispose} makes the module unusable at once
 * (`ERR_DISPOSED`) and frees the native memory after calls in flight settle;
 * `await using m = await load(...)` does it at the end of the scope.
 */
export class ScriptModule {
  static {
    handleOf = (m) => m.#handle();
    attachRecipe = (m, r) => { m.#recipe = r; };
  }

  #native: NativeModule;
  #disposed = false;
  #pending = new Set<Promise<unknown>>();
  #released: Promise<void> | undefined;
  #recipe: AttachedRecipe | undefined;
  /** The methods {@link ScriptModule.run} can call: `forward` and the exported methods. Frozen. */
  readonly methods: readonly string[];

  /** @internal Use load(), clone() or to(). */
  constructor(handle: NativeModule) {
    this.#native = handle;
    this.methods = Object.freeze(handle.methods());
  }

  #handle(): NativeModule {
    if (this.#disposed) throw new TorchfoldError('The module has been disposed', 'ERR_DISPOSED');
    return this.#native;
  }

  /** Runs async native work, tracking it so dispose() can wait for it. */
  #track<T>(start: (m: NativeModule) => Promise<T>): Promise<T> {
    const p = withCallerStack(() => start(this.#handle()));
    this.#pending.add(p);
    const forget = () => { this.#pending.delete(p); };
    p.then(forget, forget);
    return p;
  }

  /**
   * Calls `forward` with the given inputs: `run('forward', ...inputs)`.
   *
   * @param inputs - One value per argument of the method; see {@link TorchValue}.
   * @returns The method's return value.
   * @throws TypeError (`ERR_INVALID_ARG`) for a JavaScript value with no TorchScript counterpart.
   * Rejects as {@link ScriptModule.run} does.
   */
  forward(...inputs: unknown[]): Promise<TorchValue> {
    return this.run('forward', ...inputs);
  }

  /**
   * Calls any method of the module (forward or an exported method) by name.
   * Inputs are converted against the method's signature: a whole number becomes
   * a float where the signature asks for one.
   *
   * @param method - One of {@link ScriptModule.methods}.
   * @param inputs - One value per argument of the method; see {@link TorchValue}.
   * @returns The method's return value.
   * @throws TypeError (`ERR_INVALID_ARG`) for a JavaScript value with no TorchScript counterpart.
   * Rejects with `ERR_METHOD_NOT_FOUND`, `ERR_INVALID_ARG` (an input that does not fit the
   * signature, named), `ERR_TORCH` (libtorch failed in the method), `ERR_DISPOSED`, or
   * `ERR_UNSUPPORTED` (a result with no JavaScript counterpart).
   *
   * @example
   * ```ts
   * const y = await model.run('embed', Tensor.from(new Float32Array(6), [2, 3])) as Tensor;
   * ```
   */
  run(method: string, ...inputs: unknown[]): Promise<TorchValue> {
    expectString(method, 'method');
    const tensorCtor = native().NativeTensor;
    // Type mistakes throw now; a disposed tensor among the inputs rejects.
    let args: NativeValue[] = [];
    let failure: TorchfoldError | undefined;
    try {
      args = inputs.map((v, i) => toNative(v, `inputs[${i}]`));
    } catch (e) {
      if (!(e instanceof TorchfoldError)) throw e;
      failure = e;
    }
    return this.#track(async (m) => {
      if (failure) throw failure;
      return fromNative(await m.run(method, args), tensorCtor);
    });
  }

  /**
   * Saves as TorchScript, atomically: a temporary file in the same folder, then a rename.
   * `extraFiles` are stored in the archive under extra/ (PyTorch reads them with
   * torch.jit.load(f, _extra_files={name: ''}); torchfold with readExtraFiles()).
   *
   * @param file - The target; an existing file is replaced only once the new one is complete.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG`) for a bad path or option. Rejects with
   * `ERR_FILE_NOT_FOUND` when the folder does not exist and `ERR_IO` when the file cannot be
   * written (the target is left untouched).
   */
  save(file: string, options?: SaveOptions): Promise<void> {
    const target = path.resolve(expectString(file, 'path'));
    const o = expectOptions<SaveOptions>(options, 'options');
    expectKnownKeys(o, ['extraFiles'], 'options');
    const extra = checkExtraFiles(o.extraFiles);
    if (RECIPE_FILE in extra) throw rangeError(`a name other than '${RECIPE_FILE}' (torchfold's own)`, 'options.extraFiles', RECIPE_FILE);
    const recipe = this.#recipe;
    if (!recipe) return this.#track((m) => m.save(target, extra));
    // The portable form, with the recipe that makes this module from it.
    const json = JSON.stringify(recipe.spec, null, 1);
    const portable = recipe.portable ?? this;
    return this.#track(() => handleOf(portable).save(target, { ...extra, [RECIPE_FILE]: json }));
  }

  /**
   * How this module was made from a saved recipe: set on modules that {@link
   * load} made from a file holding one, undefined otherwise. Modules that
   * `fuse({ optimize })` returns carry their recipe too (save() writes it), but
   * report it in {@link OptimizeReport}.
   */
  get recipe(): RecipeReport | undefined { return this.#recipe?.report; }

  /** A deep copy with its own parameters and buffers, on the same device. */
  clone(): Promise<ScriptModule> {
    return this.#track(async (m) => new ScriptModule(await m.clone()));
  }

  /**
   * A copy on another device; this module stays where it is.
   *
   * @param device - `'cpu'`, `'cuda'` or `'cuda:N'`.
   * @throws RangeError (`ERR_INVALID_ARG`) for another device string. Rejects with
   * `ERR_DEVICE_UNAVAILABLE` when the device is missing.
   */
  to(device: string): Promise<ScriptModule> {
    const d = parseDevice(device, 'device');
    return this.#track(async (m) => new ScriptModule(await m.to(d)));
  }

  /**
   * Folds every foldable conv/linear -> BatchNorm pair into a NEW module and
   * reports what was folded, what was left and why. This module is untouched.
   * Options add constant absorption, tune mode, a fixed list of groups,
   * validation, a benchmark and the optimize step; see {@link FuseOptions}.
   *
   * @returns The new module (dispose it when done) and the {@link FuseReport}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG`) for bad options, synchronously.
   * Rejects with `ERR_FUSE_GROUP` (a `modules` group that cannot fold), `ERR_VALIDATION`
   * (with `validate.onFailure: 'throw'`), `ERR_DISPOSED`, `ERR_TORCH`, or the signal's
   * reason once `signal` aborts.
   *
   * @example
   * ```ts
   * const model = await load('resnet50.pt');
   * const { module, report } = await model.fuse({
   *   validate: { inputs: [[1, 3, 224, 224]] },
   *   benchmark: { inputs: [[1, 3, 224, 224]], iterations: 20 },
   * });
   * console.log(report.folded, report.skipped, report.validation?.maxAbsError, report.benchmark?.speedup);
   * for (const p of report.pairs) if (p.status === 'skipped') console.log(p.conv, p.norm, p.reason);
   * await module.save('resnet50.fused.pt');
   * ```
   */
  fuse(options?: FuseOptions): Promise<{
    /** The fused module: new, with every method, module path and parameter name of this one. */
    module: ScriptModule;
    /** What was folded, what was left and why, and the time each step took. */
    report: FuseReport;
  }> {
    const o = checkFuseOptions(options);
    if (o.dryRun) throw typeError('no dryRun: fuse() always returns a module; use inspect() for a dry run', 'options.dryRun', o.dryRun);
    return this.#track((m) => runFuse(this, m, o)) as Promise<{ module: ScriptModule; report: FuseReport }>;
  }

  /**
   * The same analysis as fuse(), changing nothing: which pairs would fold, and
   * why the others would not; plus the nodes of a method's graph (inlined by
   * default) linked to their producers and consumers, with shapes where known
   * (give inputShapes to propagate them), and Graphviz DOT text of it with the
   * pairs highlighted.
   *
   * @returns A {@link FuseReport} with no validation, benchmark or optimize part,
   * plus `graph` and `dot` (see {@link InspectReport}).
   * @throws TypeError/RangeError (`ERR_INVALID_ARG`) for bad options. Rejects with
   * `ERR_METHOD_NOT_FOUND` for an unknown `method` and `ERR_FUSE_GROUP` as fuse() does.
   *
   * @example
   * ```ts
   * const plan = await model.inspect({ inputShapes: [[1, 3, 224, 224]] });
   * console.log(`${plan.folded} of ${plan.pairs.length} pairs would fold`);
   * fs.writeFileSync('forward.dot', plan.dot);
   * ```
   */
  inspect(options?: InspectOptions): Promise<InspectReport> {
    const opts = expectOptions<InspectOptions>(options, 'options');
    expectKnownKeys(opts, ['treatTrainingAsEval', 'mode', 'constants', 'modules', 'method', 'inlined', 'inputShapes'], 'options');
    const { method = 'forward', inlined = true, inputShapes = [], ...rest } = opts;
    const o = checkFuseOptions(rest);
    expectString(method, 'options.method');
    if (typeof inlined !== 'boolean') throw typeError('a boolean', 'options.inlined', inlined);
    if (!Array.isArray(inputShapes) || !inputShapes.every((d) => Array.isArray(d) && d.every((n) => Number.isSafeInteger(n) && n >= 0))) {
      throw typeError('an array of shapes (arrays of integers >= 0)', 'options.inputShapes', inputShapes);
    }
    return this.#track(async (m) => {
      const report = (await runFuse(this, m, { ...o, dryRun: true })).report;
      const highlights = report.pairs.map((p) => ({ conv: p.conv, norm: p.norm, folded: p.status === 'folded' }));
      const { graph, dot } = await m.describeGraph({ method, inlined, shapes: inputShapes, highlights });
      return { ...report, graph, dot };
    });
  }

  /**
   * Converts chosen Linear/Conv layers to float16 or bfloat16 in a NEW module,
   * with casts at their boundary (input to the half dtype, output back), and
   * reports which layers were converted and why others were not. With
   * `validate`, the outputs are compared with this module's.
   *
   * @returns The new module and the {@link HalfReport}.
   * @throws TypeError/RangeError (`ERR_INVALID_ARG`) for bad options (e.g. both `layers` and
   * `minParams`). Rejects with `ERR_DISPOSED`, or `ERR_TORCH` when validation runs a module
   * libtorch cannot run (float16 on the CPU).
   *
   * @example
   * ```ts
   * const { module, report } = await model.toHalf({ dtype: 'bfloat16', minParams: 100_000,
   *   validate: { inputs: [[1, 3, 224, 224]] } });
   * console.log(report.converted, report.bytesSaved, report.validation?.maxAbsError);
   * ```
   */
  toHalf(options?: HalfOptions): Promise<{
    /** The converted module: new; this one is unchanged. */
    module: ScriptModule;
    /** Which layers were converted, and why others were not. */
    report: HalfReport;
  }> {
    const o = checkHalfOptions(options);
    return this.#track(async (m) => {
      const r = await m.toHalf({ dtype: o.dtype ?? 'float16', minParams: o.minParams ?? 0, layers: o.layers ?? [] });
      const module = new ScriptModule(r.module);
      const report: HalfReport = r.report;
      if (o.validate) {
        try {
          const inputs = await materializeAsync(o.validate.inputs, o.validate.seed ?? 0);
          report.validation = await compareOutputs(forwardOn(m), (xs) => module.forward(...xs), inputs,
            o.validate.atol ?? 1e-2, o.validate.rtol ?? 1e-2);
        } catch (e) {
          await module.dispose();
          throw e;
        }
      }
      return { module, report };
    });
  }

  /** Whether the module is in training mode (see {@link ScriptModule.train}). */
  get training(): boolean { return this.#handle().training(); }

  /** Puts the module (and its children) in eval mode; returns this. Fails with `ERR_BUSY` while calls are in flight. */
  eval(): this { return this.train(false); }

  /**
   * Puts the module (and its children) in training mode (or eval mode with
   * `false`); returns this.
   *
   * @param on - `true` for training mode (the default), `false` for eval mode.
   * @throws TorchfoldError `ERR_BUSY` while calls are in flight, so it never races a forward.
   */
  train(on = true): this {
    if (typeof on !== 'boolean') throw typeError('a boolean', 'on', on);
    this.#handle().setTraining(on);
    return this;
  }

  /**
   * The TorchScript IR of a method, as text. With `{ inlined: true }` every
   * call into a submodule or function is inlined, so all aten ops show.
   *
   * @param method - One of {@link ScriptModule.methods}; default `'forward'`.
   * @throws TorchfoldError `ERR_METHOD_NOT_FOUND` for a method the module lacks.
   */
  graph(method = 'forward', options: {
    /**
     * Inline calls into submodules and functions.
     *
     * @defaultValue `false`
     */
    inlined?: boolean;
  } = {}): string {
    if (options === null || typeof options !== 'object') throw typeError('an options object', 'options', options);
    return this.#handle().graph(expectString(method, 'method'), Boolean(options.inlined));
  }

  /**
   * Parameters and buffers as Tensors, by dotted name. The tensors share the
   * module's memory: read them, do not expect writes to reach the module.
   */
  stateDict(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(this.#handle().namedTensors())) out[name] = new Tensor(t);
    return out;
  }

  /** The root (path `''`) and every submodule, depth-first, with its class. */
  namedModules(): NamedModule[] { return this.#handle().namedModules(); }
  /** Every parameter, by dotted name, with shape, dtype and device (no data; see {@link ScriptModule.stateDict}). */
  parameters(): TensorInfo[] { return this.#handle().parameters(); }
  /** Every buffer (e.g. BatchNorm running statistics), by dotted name, with shape, dtype and device. */
  buffers(): TensorInfo[] { return this.#handle().buffers(); }
  /** Where the parameters and buffers are: `'cpu'` or `'cuda:N'`. */
  get device(): string { return this.#handle().device(); }
  /** Whether {@link ScriptModule.dispose} has been called. Readable after disposal. */
  get disposed(): boolean { return this.#disposed; }

  /**
   * Makes the module unusable now and frees its native memory once calls in
   * flight have settled. Idempotent. The returned promise resolves when freed.
   */
  dispose(): Promise<void> {
    if (!this.#released) {
      this.#disposed = true;
      const pending = [...this.#pending];
      const portable = this.#recipe?.portable;
      this.#released = Promise.allSettled(pending).then(async () => {
        this.#native.dispose();
        if (portable) await portable.dispose();
      });
    }
    return this.#released;
  }

  /** {@link ScriptModule.dispose} for `using`, without waiting for the memory to be freed. */
  [Symbol.dispose](): void { void this.dispose(); }
  /** {@link ScriptModule.dispose} for `await using`. */
  [Symbol.asyncDispose](): Promise<void> { return this.dispose(); }
}

const nativeOptions = (o: FuseOptions) => ({
  dryRun: Boolean(o.dryRun), treatTrainingAsEval: Boolean(o.treatTrainingAsEval), mode: o.mode ?? 'fold',
  constants: Boolean(o.constants), ...(o.modules ? { modules: o.modules } : {}),
});

/**
 * Tries the inference candidates (the input module, the fused module, frozen,
 * frozen + optimize_for_inference), validates each against the input module,
 * checks that it keeps every method and survives a save/load round trip,
 * times them interleaved on the same inputs and keeps the fastest.
 */
async function optimizeStep(self: ScriptModule, handle: NativeModule, fused: ScriptModule, o: FuseOptions):
  Promise<{ module: ScriptModule; report: OptimizeReport }> {
  const opt: OptimizeOptions = typeof o.optimize === 'object' ? o.optimize : {};
  const sample = opt.inputs ?? o.benchmark?.inputs ?? o.validate!.inputs;
  const inputs = await materializeAsync(sample, opt.seed ?? o.benchmark?.seed ?? 0);
  const atol = opt.atol ?? o.validate?.atol, rtol = opt.rtol ?? o.validate?.rtol;  // undefined: by output dtype
  const requireSaveable = opt.requireSaveable ?? true;
  const original: Runner = forwardOn(handle);
  const entries: Entry[] = [
    { report: { name: 'input', eligible: true, saveable: true, methodsKept: true, buildMs: 0 }, module: null, run: original },
    { report: { name: 'fused', eligible: true, saveable: true, methodsKept: true, buildMs: 0 }, module: fused,
      run: (xs) => fused.forward(...xs) },
  ];
  const fusedHandle = nativeHandle(fused);
  try {
    return await chooseCandidate(self, handle, fused, fusedHandle, o, opt, entries, inputs, atol, rtol, requireSaveable);
  } catch (e) {
    for (const x of entries) if (x.module && x.module !== fused) await x.module.dispose();
    throw e;
  }
}

type Entry = Candidate<ScriptModule>;

async function chooseCandidate(self: ScriptModule, handle: NativeModule, fused: ScriptModule, fusedHandle: NativeModule, o: FuseOptions,
  opt: OptimizeOptions, entries: Entry[], inputs: Tensor[], atol: number | undefined, rtol: number | undefined, requireSaveable: boolean):
  Promise<{ module: ScriptModule; report: OptimizeReport }> {
  const original = entries[0].run;
  const signal = o.signal;
  const seed = opt.seed ?? o.benchmark?.seed ?? 0;
  entries.push(...await buildCandidates(fusedHandle, handle.device() === 'cpu', (h) => new ScriptModule(h), signal));
  for (const e of entries) {
    if (e.recipe) e.recipe.spec.check = checkSample(inputs, seed, atol ?? 1e-4, rtol ?? 1e-3);  // float32 samples only
  }
  for (const e of entries.slice(1)) {
    signal?.throwIfAborted();
    if (!e.module) continue;
    const r = e.report;
    r.methodsKept = self.methods.every((m) => e.module!.methods.includes(m));
    try {
      // Twice: TorchScript's executor optimizes a graph after its first (profiling) run, and
      // the fusers compile then, so the second call is the first that runs what will be timed.
      const first = await compareOutputs(original, e.run, inputs, atol, rtol);
      const second = await compareOutputs(original, e.run, inputs, atol, rtol);
      r.validation = { ...(second.maxAbsError >= first.maxAbsError ? second : first), passed: first.passed && second.passed };
    } catch (err) {
      r.reason = `failed on the sample inputs: ${(err as Error).message}`;
      continue;
    }
    const problems = [];
    if (!r.validation.passed) problems.push(`outputs differ from the input module's (max abs error ${r.validation.maxAbsError.toExponential(3)})`);
    if (!r.methodsKept) problems.push('it lost exported methods');
    if (!r.saveable && requireSaveable) problems.push(`it cannot be saved and loaded back (${r.saveError}); pass optimize.requireSaveable: false to allow it`);
    r.eligible = problems.length === 0;
    if (!r.eligible) r.reason = problems.join('; ');
  }
  // Every candidate that runs is timed (so the report compares them side by
  // side, e.g. with libtorch's own freeze + optimize_for_inference); only
  // eligible ones can be chosen.
  const timed = entries.filter((e) => e.report.eligible || e.report.validation);
  const iterations = opt.iterations ?? 20, warmup = opt.warmup ?? 3;
  const samples = await timeRounds(timed.map((e) => e.run), inputs, iterations, warmup, signal);
  timed.forEach((e, i) => { e.report.latency = latencyStats(samples[i]); });
  // Speedups pair the rounds (input's time / candidate's time in the same
  // round), so a machine that drifts between fast and slow phases does not
  // decide the choice; the highest wins, the earlier (simpler) one on a tie.
  const base = samples[0];
  timed.forEach((e, i) => { e.report.speedup = i === 0 ? 1 : pairedRatio(base, samples[i]); });
  const best = timed.filter((e) => e.report.eligible)
    .reduce((a, b) => (b.report.speedup! > a.report.speedup! ? b : a));
  let module = best.module;
  if (best.report.name === 'input') module = new ScriptModule(await handle.clone());
  const keep = new Set([module, best.recipe?.portable]);
  for (const e of entries) {
    if (e !== best && e.module && e.module !== fused && !keep.has(e.module)) await e.module.dispose();
  }
  if (best.recipe) attachRecipe(module!, { portable: best.recipe.portable, spec: best.recipe.spec });
  if (!keep.has(fused)) await fused.dispose();
  const report: OptimizeReport = { chosen: best.report.name, candidates: entries.map((e) => e.report), iterations, warmup,
    threads: getNumThreads(), inputs: inputs.map((t) => [...t.shape]) };
  return { module: module!, report };
}

/** Finds the folded pairs that alone push the outputs past the tolerance. */
async function culprits(handle: NativeModule, o: FuseOptions, original: Runner, inputs: Tensor[],
  report: NativeFuseResult['report']): Promise<string[]> {
  const folded = report.pairs.filter((p) => p.status === 'folded').map((p) => p.norm);
  const bad: string[] = [];
  for (const norm of folded) {
    o.signal?.throwIfAborted();
    const only = await handle.fuse({ ...nativeOptions(o), exclude: folded.filter((n) => n !== norm) });
    const single = new ScriptModule(only.module as NativeModule);
    const v = await compareOutputs(original, (xs) => single.forward(...xs), inputs, o.validate!.atol, o.validate!.rtol);
    await single.dispose();
    if (!v.passed) bad.push(norm);
  }
  return bad.length ? bad : folded;  // no single culprit: the errors add up, so fold none
}

async function runFuse(self: ScriptModule, handle: NativeModule, o: FuseOptions):
  Promise<{ module: ScriptModule | null; report: FuseReport }> {
  o.signal?.throwIfAborted();
  const result = await handle.fuse(nativeOptions(o));
  if (o.dryRun) return { module: null, report: finishReport(result.report, { validate: 0, benchmark: 0 }) };
  // Whatever fails or is aborted after this frees the module it was working on.
  const holder = { fused: new ScriptModule(result.module as NativeModule) };
  try {
    o.signal?.throwIfAborted();
    const out = await finishFuse(self, handle, o, result, holder);
    o.signal?.throwIfAborted();
    return out;
  } catch (e) {
    await holder.fused.dispose();
    throw e;
  }
}

async function finishFuse(self: ScriptModule, handle: NativeModule, o: FuseOptions, first: NativeFuseResult,
  holder: { fused: ScriptModule }): Promise<{ module: ScriptModule; report: FuseReport }> {
  let result = first;
  let fused = holder.fused;
  const original: Runner = forwardOn(handle);
  let validation: ValidationReport | undefined;
  const t0 = performance.now();
  if (o.validate) {
    const v = o.validate;
    const inputs = await materializeAsync(v.inputs, v.seed ?? 0);
    const [atol, rtol] = [v.atol, v.rtol];  // undefined: by output dtype (defaultTolerance)
    validation = await compareOutputs(original, (xs) => fused.forward(...xs), inputs, atol, rtol);
    if (!validation.passed && v.onFailure === 'throw') {
      throw new TorchfoldError(`Validation failed: max abs error ${validation.maxAbsError.toExponential(3)}, ` +
        `max rel error ${validation.maxRelError.toExponential(3)} (atol ${validation.atol}, rtol ${validation.rtol})`, 'ERR_VALIDATION');
    }
    if (!validation.passed && (v.onFailure ?? 'unfold') === 'unfold') {
      const bad = await culprits(handle, o, original, inputs, result.report);
      const why = `left unfolded: folding it moved the outputs past the tolerance (max abs error ${validation.maxAbsError.toExponential(3)})`;
      result = await handle.fuse({ ...nativeOptions(o), exclude: bad, excludeReason: why });
      await fused.dispose();
      fused = holder.fused = new ScriptModule(result.module as NativeModule);
      o.signal?.throwIfAborted();
      validation = await compareOutputs(original, (xs) => fused.forward(...xs), inputs, atol, rtol);
    }
  }
  const validateMs = performance.now() - t0;
  const t2 = performance.now();
  let optimized: OptimizeReport | undefined;
  if (o.optimize) {
    const r = await optimizeStep(self, handle, fused, o);
    fused = holder.fused = r.module;
    optimized = r.report;
  }
  const optimizeMs = o.optimize ? performance.now() - t2 : 0;
  const t1 = performance.now();
  const final = fused;
  const bench = o.benchmark ? await benchmark(original, (xs) => final.forward(...xs),
    await materializeAsync(o.benchmark.inputs, o.benchmark.seed ?? 0), o.benchmark.iterations ?? 20, o.benchmark.warmup ?? 3,
    o.signal) : undefined;
  const report = finishReport(result.report, { validate: o.validate ? validateMs : 0,
    benchmark: o.benchmark ? performance.now() - t1 : 0, optimize: optimizeMs });
  if (validation) report.validation = validation;
  if (bench) report.benchmark = bench;
  if (optimized) report.optimize = optimized;
  return { module: fused, report };
}

const LOAD_KEYS = ['device', 'verify', 'isolate', 'recipe'] as const;

/**
 * Loads a TorchScript file (made by torch.jit.script/trace + save).
 *
 * Before libtorch reads the archive, torchfold checks its zip directory and the
 * CRC-32 of its code and pickle records (all records with `verify`); after, that
 * no tensor claims more bytes than its record.
 *
 * @param file - Path to the `.pt` file.
 * @param options - See {@link LoadOptions}.
 * @throws TypeError/RangeError (`ERR_INVALID_ARG`) for a bad path or option;
 * TorchfoldError `ERR_NATIVE_LOAD` when the addon cannot be loaded. Rejects with
 * `ERR_FILE_NOT_FOUND`, `ERR_NOT_A_FILE`, `ERR_FILE_UNREADABLE`, `ERR_NOT_TORCHSCRIPT`,
 * `ERR_FILE_CORRUPT`, `ERR_UNSUPPORTED` (an operator no loaded library registers, or a
 * newer file format), `ERR_DEVICE_UNAVAILABLE`, and with `isolate`, `ERR_TIMEOUT`.
 *
 * @example
 * ```ts
 * import { load, Tensor } from 'torchfold';
 *
 * const model = await load('resnet18.pt');                  // or { device: 'cuda', verify: true, isolate: true }
 * const y = await model.forward(Tensor.from(new Float32Array(3 * 224 * 224), [1, 3, 224, 224])) as Tensor;
 * console.log(y.shape, y.toTypedArray());
 * await model.dispose();
 * ```
 */
export function load(file: string, options?: LoadOptions): Promise<ScriptModule> {
  const target = path.resolve(expectString(file, 'path'));
  const opts = expectOptions<LoadOptions>(options, 'options');
  expectKnownKeys(opts, LOAD_KEYS, 'options');
  const device = opts.device === undefined ? 'cpu' : parseDevice(opts.device, 'options.device');
  const verify = opts.verify ?? false;
  if (typeof verify !== 'boolean') throw typeError('a boolean', 'options.verify', verify);
  const timeoutMs = isolateTimeout(opts.isolate);
  const useRecipe = opts.recipe ?? true;
  if (typeof useRecipe !== 'boolean') throw typeError('a boolean', 'options.recipe', useRecipe);
  const binding = native();
  return withCallerStack(async () => {
    if (timeoutMs !== undefined) await probeInChild(target, device, verify, timeoutMs);
    const handle = await binding.load(target, device, verify);
    const stored = useRecipe ? (await binding.readExtraFiles(target, [RECIPE_FILE]))[RECIPE_FILE] : undefined;
    if (stored === undefined) return new ScriptModule(handle);
    let spec: RecipeSpec;
    try {
      spec = parseRecipe(stored);
    } catch (e) {
      handle.dispose();
      throw e;
    }
    const portable = new ScriptModule(handle);
    const { handle: made, report } = await applyRecipe(handle, spec);
    if (made === handle) {
      attachRecipe(portable, { portable: null, spec, report });
      return portable;
    }
    const m = new ScriptModule(made);
    attachRecipe(m, { portable, spec, report });
    return m;
  });
}

function isolateTimeout(isolate: unknown): number | undefined {
  if (isolate === undefined || isolate === false) return undefined;
  if (isolate === true) return DEFAULT_ISOLATE_TIMEOUT_MS;
  const o = expectOptions<IsolateOptions>(isolate, 'options.isolate');
  expectKnownKeys(o, ['timeoutMs'], 'options.isolate');
  const t = o.timeoutMs ?? DEFAULT_ISOLATE_TIMEOUT_MS;
  if (typeof t !== 'number' || !Number.isFinite(t) || t <= 0) throw rangeError('a number of milliseconds > 0', 'options.isolate.timeoutMs', t);
  return t;
}

/**
 * Checks a TorchScript archive without loading it: every record's CRC-32 and
 * place in the file against the zip directory. `problems` names each record
 * that does not match; `ok` is true when there is none. File errors as load().
 *
 * @param file - Path to the archive.
 * @throws TypeError (`ERR_INVALID_ARG`) for a bad path. Rejects with `ERR_FILE_NOT_FOUND`,
 * `ERR_NOT_A_FILE`, `ERR_FILE_UNREADABLE` or `ERR_NOT_TORCHSCRIPT` (no readable zip directory).
 */
export function verifyFile(file: string): Promise<{
  /** True when no record has a problem. */
  ok: boolean;
  /** One line per record that fails its check, naming the record. */
  problems: string[];
}> {
  const target = path.resolve(expectString(file, 'path'));
  const binding = native();
  return withCallerStack(async () => {
    const problems = await binding.verifyFile(target);
    return { ok: problems.length === 0, problems };
  });
}
