/** Usage errors (exit code 2) and parsers for option values. */
import { native } from '../binding';
import { TorchfoldError } from '../errors';
import { parseDevice as libraryParseDevice } from '../validate';
import type { DType } from '../tensor';

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export function parseShape(value: string, flag = '--input-shape'): number[] {
  const parts = value.split(/[,x×]/).map((s) => s.trim());
  const dims = parts.map(Number);
  if (parts.some((p) => p === '') || !dims.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new UsageError(`${flag} takes sizes separated by commas, e.g. 1,3,224,224; got '${value}'`);
  }
  return dims;
}

export const INPUT_DTYPES: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];

export function parseDtype(value: string): DType {
  if (!(INPUT_DTYPES as string[]).includes(value)) {
    throw new UsageError(`--input-dtype takes one of ${INPUT_DTYPES.join(', ')}; got '${value}'`);
  }
  return value as DType;
}

export function parseInteger(value: string, flag: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(value);
  if (!/^\s*\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`${flag} takes an integer from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ''}; got '${value}'`);
  }
  return n;
}

export function parseNonNegative(value: string, flag: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`${flag} takes a number >= 0; got '${value}'`);
  return n;
}

/** 512M, 4G, 1.5GiB, 1000000 (bytes). */
export function parseSize(value: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$/i.exec(value);
  if (!m) throw new UsageError(`${flag} takes a size such as 512M or 4G; got '${value}'`);
  const scale = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * scale);
}

/** --device, checked by the library's own rule (cpu, cuda, cuda:0..63). */
export function parseDevice(value: string): string {
  try {
    return libraryParseDevice(value, '--device');
  } catch {
    throw new UsageError(`--device takes cpu, cuda or cuda:N; got '${value}'`);
  }
}

/**
 * CUDA asked for on a machine without it is a usage error, found before any
 * work. The code and reason are the API's (ERR_DEVICE_UNAVAILABLE: a CPU-only
 * build, or a CUDA build with no GPU visible).
 */
export function checkDevice(device: string): void {
  try {
    native().checkDevice(device);
  } catch (e) {
    if (e instanceof TorchfoldError && e.code === 'ERR_DEVICE_UNAVAILABLE') throw new UsageError(`${e.code}: ${e.message}`);
    throw e;
  }
}

/** --modules conv1,bn1[,relu] */
export function parseGroup(value: string): string[] {
  const g = value.split(',').map((s) => s.trim());
  if (g.length < 2 || g.length > 3 || g.some((p) => p === '')) {
    throw new UsageError(`--modules takes 2 or 3 module paths separated by commas, e.g. layer1.0.conv1,layer1.0.bn1; got '${value}'`);
  }
  return g;
}
