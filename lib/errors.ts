/**
 * One error class for everything torchfold reports at run time, with a stable
 * `code`. Argument mistakes are thrown synchronously as TypeError/RangeError
 * (with `code: 'ERR_INVALID_ARG'`), never as rejections.
 */

/**
 * The stable `code` of a {@link TorchfoldError} (and `'ERR_INVALID_ARG'` on
 * argument TypeErrors/RangeErrors). Match on the code, not on the message:
 * messages may be reworded, codes do not change.
 *
 * | code | when |
 * | --- | --- |
 * | `ERR_FILE_NOT_FOUND` | No such file, or no folder to save into. |
 * | `ERR_NOT_A_FILE` | The path is a folder, or not a regular file. |
 * | `ERR_FILE_UNREADABLE` | No permission to read the file. |
 * | `ERR_NOT_TORCHSCRIPT` | Empty, not a zip, an unreadable zip directory, or a `torch.save` state_dict; the message says how to export TorchScript. |
 * | `ERR_FILE_CORRUPT` | A TorchScript archive with damaged contents (a CRC-32 mismatch, a tensor bigger than its record, unreadable code or pickles), or a file that crashed the child process of `isolate`. |
 * | `ERR_TIMEOUT` | `load(path, { isolate })`: the child process did not answer within `timeoutMs`. |
 * | `ERR_INVALID_ARG` | A bad argument: thrown synchronously as a TypeError/RangeError, or a rejection when a method input does not fit the method's signature. |
 * | `ERR_DEVICE_UNAVAILABLE` | CUDA asked for but not available. |
 * | `ERR_METHOD_NOT_FOUND` | `run(name)` or `graph(name)` for a method the module lacks. |
 * | `ERR_DISPOSED` | A module or tensor used after `dispose()`. |
 * | `ERR_BUSY` | `train()` or `eval()` while calls on the module are in flight. |
 * | `ERR_IO` | A save that could not be written (the target is left untouched), or an `isolate` child that could not start. |
 * | `ERR_UNSUPPORTED` | A value with no JavaScript counterpart, reading a complex tensor, an operator no loaded library registers, or a file format this libtorch cannot read. |
 * | `ERR_NATIVE_LOAD` | The addon or libtorch could not be loaded; the message lists likely causes and fixes. Thrown synchronously by the first call that needs the addon. |
 * | `ERR_VALIDATION` | `fuse({ validate: { onFailure: 'throw' } })` found outputs past the tolerance, or the fused module returns differently shaped outputs. |
 * | `ERR_FUSE_GROUP` | A `fuse({ modules })` group is not a foldable conv → BatchNorm pair; the message names the group and the reason. |
 * | `ERR_TORCH` | libtorch failed inside a method; the message is libtorch's, without the C++ backtrace. |
 */
export type ErrorCode =
  | 'ERR_FILE_NOT_FOUND'
  | 'ERR_NOT_A_FILE'
  | 'ERR_FILE_UNREADABLE'
  | 'ERR_NOT_TORCHSCRIPT'
  | 'ERR_FILE_CORRUPT'
  | 'ERR_TIMEOUT'
  | 'ERR_INVALID_ARG'
  | 'ERR_DEVICE_UNAVAILABLE'
  | 'ERR_METHOD_NOT_FOUND'
  | 'ERR_DISPOSED'
  | 'ERR_BUSY'
  | 'ERR_IO'
  | 'ERR_UNSUPPORTED'
  | 'ERR_NATIVE_LOAD'
  | 'ERR_VALIDATION'
  | 'ERR_FUSE_GROUP'
  | 'ERR_TORCH';

/**
 * Every run-time failure of torchfold: promises reject with it, and the
 * synchronous members throw it (e.g. `ERR_DISPOSED` on a disposed module,
 * `ERR_BUSY` from `train()`, `ERR_METHOD_NOT_FOUND` from `graph()`).
 * Argument mistakes are not TorchfoldErrors: they throw
 * synchronously as `TypeError`/`RangeError` with `code: 'ERR_INVALID_ARG'`.
 *
 * @example
 * ```ts
 * try {
 *   await load('model.pt', { verify: true });
 * } catch (e) {
 *   if (e instanceof TorchfoldError && e.code === 'ERR_FILE_CORRUPT') console.error('damaged:', e.message);
 *   else throw e;
 * }
 * ```
 */
export class TorchfoldError extends Error {
  /** What went wrong, stable across versions. */
  readonly code: ErrorCode;

  /**
   * @param message - What happened, for people.
   * @param code - What happened, for programs.
   */

  constructor(message: string, code: ErrorCode) {
    super(message);
    this.name = 'TorchfoldError';
    this.code = code;
  }
}

type ArgError = (TypeError | RangeError) & { code: 'ERR_INVALID_ARG' };

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return `'${value.length > 60 ? value.slice(0, 57) + '...' : value}'`;
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'object' || typeof value === 'function') {
    const ctor = (value as { constructor?: { name?: string } }).constructor?.name;
    return ctor ? `an instance of ${ctor}` : typeof value;
  }
  const rest = value as number | boolean | symbol | undefined; // all that the cases above leave
  return `${typeof rest} ${String(rest)}`;
}

/** "Expected <what> for <name> but received <value>" as a TypeError. */
export function typeError(what: string, name: string, value: unknown): ArgError {
  const e = new TypeError(`Expected ${what} for ${name} but received ${describe(value)}`) as ArgError;
  e.code = 'ERR_INVALID_ARG';
  return e;
}

/** Same vocabulary for a value of the right type but out of range. */
export function rangeError(what: string, name: string, value: unknown): ArgError {
  const e = new RangeError(`Expected ${what} for ${name} but received ${describe(value)}`) as ArgError;
  e.code = 'ERR_INVALID_ARG';
  return e;
}

/**
 * Native rejections carry no JS stack. Capture the caller's stack when the
 * call starts and graft it onto the error if the promise rejects.
 */
export function withCallerStack<T>(start: () => Promise<T>): Promise<T> {
  const holder: { stack?: string } = {};
  Error.captureStackTrace(holder, withCallerStack);
  let promise: Promise<T>;
  try {
    promise = start();
  } catch (e) {
    // Runtime failures found before the work was queued (e.g. a disposed
    // tensor among the inputs) still surface as rejections.
    if (e instanceof TorchfoldError) return Promise.reject(e);
    throw e;
  }
  return promise.catch((e: unknown) => {
    if (e instanceof Error && holder.stack) {
      const frames = holder.stack.split('\n').slice(1).join('\n');
      e.stack = `${e.name}${e instanceof TorchfoldError ? ` [${e.code}]` : ''}: ${e.message}\n${frames}`;
    }
    throw e;
  });
}
