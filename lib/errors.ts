/**
 * One error class for everything torchfold reports at run time, with a stable
 * `code`. Argument mistakes are thrown synchronously as TypeError/RangeError
 * (with `code: 'ERR_INVALID_ARG'`), never as rejections.
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

export class TorchfoldError extends Error {
  readonly code: ErrorCode;

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
  return `${typeof value} ${String(value)}`;
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
