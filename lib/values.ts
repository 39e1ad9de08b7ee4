/**
 * Maps JS values to what the native layer takes, and back. Tensors become
 * native handles on the way in and Tensor objects on the way out; lists and
 * tuples are arrays; Dict[str, T] is a plain object; dicts with other keys
 * come back as a Map; ints beyond 2**53 come back as BigInt.
 */
import { NativeTensor, NativeValue } from './binding';
import { typeError } from './errors';
import { Tensor } from './tensor';

/**
 * A TorchScript value in JavaScript: what methods take and return. Tensor ↔
 * {@link Tensor}, float/int ↔ number (ints beyond 2^53 come back as bigint;
 * bigint is accepted), bool ↔ boolean, str ↔ string, None ↔ null/undefined,
 * List/Tuple ↔ array, Dict[str, T] ↔ plain object; dicts with other key types
 * come back as a Map. Inputs are converted against the method's signature.
 */
export type TorchValue =
  | null
  | undefined
  | boolean
  | number
  | bigint
  | string
  | Tensor
  | TorchValue[]
  | Map<string | number | bigint | boolean, TorchValue>
  | { [key: string]: TorchValue };

/** Defines rather than assigns, so a key named "__proto__" stays an ordinary key. */
function define<T>(o: { [key: string]: T }, key: string, value: T): void {
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
}

function isPlainObject(v: object): boolean {
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

export function toNative(value: unknown, name: string, seen = new Set<object>()): NativeValue {
  switch (typeof value) {
    case 'undefined': case 'boolean': case 'string': case 'bigint':
      return value;
    case 'number':
      return value;
    case 'object':
      break;
    default:
      throw typeError('a Tensor, number, boolean, string, null, array or plain object', name, value);
  }
  if (value === null) return null;
  if (value instanceof Tensor) return Tensor.handle(value);
  if (ArrayBuffer.isView(value)) throw typeError('a Tensor (wrap typed arrays with Tensor.from())', name, value);
  if (seen.has(value)) throw typeError('an acyclic value', name, 'a cycle');
  seen.add(value);
  try {
    if (Array.isArray(value)) return value.map((v, i) => toNative(v, `${name}[${i}]`, seen));
    if (!isPlainObject(value)) {
      throw typeError('a Tensor, number, boolean, string, null, array or plain object', name, value);
    }
    const out: { [key: string]: NativeValue } = {};
    for (const [k, v] of Object.entries(value)) define(out, k, toNative(v, `${name}.${k}`, seen));
    return out;
  } finally {
    seen.delete(value);
  }
}

export function fromNative(value: NativeValue, tensorCtor: new () => NativeTensor): TorchValue {
  if (value === null || value === undefined || typeof value !== 'object') return value;
  if (value instanceof tensorCtor) return new Tensor(value);
  if (Array.isArray(value)) return value.map((v) => fromNative(v, tensorCtor));
  if (value instanceof Map) {
    const out = new Map<string | number | bigint | boolean, TorchValue>();
    for (const [k, v] of value) out.set(k as string, fromNative(v, tensorCtor));
    return out;
  }
  const out: { [key: string]: TorchValue } = {};
  for (const [k, v] of Object.entries(value)) define(out, k, fromNative(v, tensorCtor));
  return out;
}
