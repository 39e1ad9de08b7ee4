/** Argument checks shared by the public API, in one message vocabulary. */
import { rangeError, typeError } from './errors';

// cuda:0 .. cuda:63 (libtorch's device index is 8 bits; larger ones would wrap).
const DEVICE = /^(cpu|cuda(:([0-9]|[1-5][0-9]|6[0-3]))?)$/;

export function parseDevice(value: unknown, name: string): string {
  if (typeof value !== 'string') throw typeError("a device string ('cpu', 'cuda', 'cuda:N')", name, value);
  if (!DEVICE.test(value)) throw rangeError("'cpu', 'cuda' or 'cuda:N'", name, value);
  return value;
}

export function expectString(value: unknown, name: string): string {
  if (typeof value !== 'string' || value.length === 0) throw typeError('a non-empty string', name, value);
  if (value.includes('\0')) throw typeError('a string without NUL characters', name, value);
  return value;
}

export function expectOptions<T extends object>(value: unknown, name: string): Partial<T> {
  if (value === undefined) return {};
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw typeError('an options object', name, value);
  }
  return value;
}

/** Rejects option keys the function does not know, so typos are not silently ignored. */
export function expectKnownKeys(value: object, known: readonly string[], name: string): void {
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw rangeError(`one of ${known.join(', ')}`, `a key of ${name}`, key);
  }
}
