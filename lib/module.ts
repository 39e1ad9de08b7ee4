/**
 * ScriptModule: a loaded TorchScript module. Everything that touches tensors
 * (load, run, save, clone, to) runs on libuv's worker pool and returns a
 * promise; metadata reads are synchronous and cheap.
 *
 * dispose() makes the module unusable at once (ERR_DISPOSED) but frees the
 * native module only after calls already in flight have settled.
 */
import * as path from 'path';
import { native, NativeModule, NativeValue, TensorInfo } from './binding';
import { TorchfoldError, typeError, withCallerStack } from './errors';
import { expectKnownKeys, expectOptions, expectString, parseDevice } from './validate';
import { fromNative, toNative, TorchValue } from './values';

export type { TensorInfo } from './binding';

export interface NamedModule {
  /** '' for the root, 'layer1.0.conv1' for a child. */
  path: string;
  /** The module's class, e.g. 'torchvision.models.resnet.BasicBlock' or 'torch.nn.modules.conv.Conv2d'. */
  type: string;
}

export interface LoadOptions {
  /** Where parameters and buffers are placed: 'cpu' (default), 'cuda' or 'cuda:N'. */
  device?: string;
}

export class ScriptModule {
  #native: NativeModule;
  #disposed = false;
  #pending = new Set<Promise<unknown>>();
  #released: Promise<void> | undefined;
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

  /** Calls `forward` with the given inputs. */
  forward(...inputs: unknown[]): Promise<TorchValue> {
    return this.run('forward', ...inputs);
  }

  /** Calls any method of the module (forward or an exported method) by name. */
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

  /** Saves as TorchScript, atomically: a temporary file in the same folder, then a rename. */
  save(file: string): Promise<void> {
    const target = path.resolve(expectString(file, 'path'));
    return this.#track((m) => m.save(target));
  }

  /** A deep copy with its own parameters and buffers. */
  clone(): Promise<ScriptModule> {
    return this.#track(async (m) => new ScriptModule(await m.clone()));
  }

  /** A copy on another device; this module stays where it is. */
  to(device: string): Promise<ScriptModule> {
    const d = parseDevice(device, 'device');
    return this.#track(async (m) => new ScriptModule(await m.to(d)));
  }

  get training(): boolean { return this.#handle().training(); }

  /** Puts the module (and its children) in eval mode; returns this. */
  eval(): this { return this.train(false); }

  /** Puts the module (and its children) in training mode; returns this. Fails with ERR_BUSY while calls are in flight. */
  train(on = true): this {
    if (typeof on !== 'boolean') throw typeError('a boolean', 'on', on);
    this.#handle().setTraining(on);
    return this;
  }

  /** The TorchScript IR of a method, as text. */
  graph(method = 'forward'): string {
    return this.#handle().graph(expectString(method, 'method'));
  }

  namedModules(): NamedModule[] { return this.#handle().namedModules(); }
  parameters(): TensorInfo[] { return this.#handle().parameters(); }
  buffers(): TensorInfo[] { return this.#handle().buffers(); }
  get device(): string { return this.#handle().device(); }
  get disposed(): boolean { return this.#disposed; }

  /**
   * Makes the module unusable now and frees its native memory once calls in
   * flight have settled. Idempotent. The returned promise resolves when freed.
   */
  dispose(): Promise<void> {
    if (!this.#released) {
      this.#disposed = true;
      const pending = [...this.#pending];
      this.#released = Promise.allSettled(pending).then(() => this.#native.dispose());
    }
    return this.#released;
  }

  [Symbol.dispose](): void { void this.dispose(); }
  [Symbol.asyncDispose](): Promise<void> { return this.dispose(); }
}

const LOAD_KEYS = ['device'] as const;

/** Loads a TorchScript file (made by torch.jit.script/trace + save). */
export function load(file: string, options?: LoadOptions): Promise<ScriptModule> {
  const target = path.resolve(expectString(file, 'path'));
  const opts = expectOptions<LoadOptions>(options, 'options');
  expectKnownKeys(opts, LOAD_KEYS, 'options');
  const device = opts.device === undefined ? 'cpu' : parseDevice(opts.device, 'options.device');
  const binding = native();
  return withCallerStack(async () => new ScriptModule(await binding.load(target, device)));
}
