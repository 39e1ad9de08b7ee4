/**
 * Tensors cross the boundary by copy: Tensor.from() copies a typed array into
 * libtorch memory, toTypedArray() copies back out. A Tensor holds native
 * memory until dispose() (or garbage collection).
 */
import { inspect } from 'util';
import { native, NativeTensor } from './binding';
import { rangeError, TorchfoldError, typeError, withCallerStack } from './errors';
import { parseDevice } from './validate';

export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'int16' | 'int32' | 'int64' | 'uint8' | 'bool';

export type TensorData =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array
  | BigInt64Array | Uint8Array | Uint16Array;

type ArrayCtor = { new (buffer: ArrayBuffer): TensorData; name: string };

const ARRAY_FOR: Record<DType, ArrayCtor> = {
  float32: Float32Array, float64: Float64Array,
  float16: Uint16Array, bfloat16: Uint16Array,
  int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
  uint8: Uint8Array, bool: Uint8Array,
};

/** The dtypes each typed array can carry; the first is the default. */
const DTYPES_FOR = new Map<ArrayCtor, DType[]>([
  [Float32Array, ['float32']], [Float64Array, ['float64']],
  [Int8Array, ['int8']], [Int16Array, ['int16']], [Int32Array, ['int32']],
  [BigInt64Array, ['int64']], [Uint8Array, ['uint8', 'bool']],
  [Uint16Array, ['float16', 'bfloat16']],
]);

export interface TensorFromOptions {
  /** Needed for float16/bfloat16 (raw bits in a Uint16Array) and for bool (a Uint8Array of 0/1). */
  dtype?: DType;
}

function checkShape(shape: unknown, length: number): number[] {
  if (!Array.isArray(shape)) throw typeError('an array of integers', 'shape', shape);
  let product = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw rangeError('non-negative integers', 'shape', shape);
    }
    product *= d;
  }
  if (product !== length) {
    throw rangeError(`a shape with ${length} elements`, 'shape', `[${shape.join(', ')}] (${product} elements)`);
  }
  // With a 0 among them the product is 0, but libtorch still multiplies the sizes in int64.
  if (shape.reduce((a: number, d: number) => (d === 0 ? a : a * d), 1) > Number.MAX_SAFE_INTEGER) {
    throw rangeError('sizes whose product (zeros aside) is at most 2^53 - 1', 'shape', `[${shape.join(', ')}]`);
  }
  return shape.slice();
}

function pickDType(data: TensorData, options: TensorFromOptions): DType {
  const allowed = DTYPES_FOR.get(data.constructor as ArrayCtor);
  if (!allowed) throw typeError('a supported typed array', 'data', data);
  const dtype = options.dtype ?? allowed[0];
  if (!allowed.includes(dtype)) {
    throw rangeError(`one of ${allowed.join(', ')} for a ${data.constructor.name}`, 'options.dtype', dtype);
  }
  if (data instanceof Uint16Array && options.dtype === undefined) {
    throw typeError("dtype 'float16' or 'bfloat16' (a Uint16Array holds raw half-precision bits)",
      'options.dtype', undefined);
  }
  if (dtype === 'bool' && (data as Uint8Array).some((b) => b > 1)) {
    throw rangeError('only 0 and 1 in a bool tensor', 'data', 'other values');
  }
  return dtype;
}

export class Tensor {
  #native: NativeTensor;

  /** @internal Use Tensor.from(), or receive tensors from a module. */
  constructor(handle: NativeTensor) {
    this.#native = handle;
  }

  /** Copies `data` into a new CPU tensor of the given shape (default: 1-D). */
  static from(data: TensorData, shape?: readonly number[], options: TensorFromOptions = {}): Tensor {
    if (!ArrayBuffer.isView(data) || data instanceof DataView) {
      throw typeError('a typed array', 'data', data);
    }
    if (options === null || typeof options !== 'object') throw typeError('an object', 'options', options);
    const dtype = pickDType(data as TensorData, options);
    const dims = checkShape(shape ?? [data.length], data.length);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return new Tensor(native().tensorFromBuffer(bytes, dtype, dims));
  }

  /** @internal */
  static handle(t: Tensor): NativeTensor {
    if (t.#native.disposed()) throw new TorchfoldError('The tensor has been disposed', 'ERR_DISPOSED');
    return t.#native;
  }

  get shape(): number[] { return this.#native.shape(); }
  get dtype(): string { return this.#native.dtype(); }
  get device(): string { return this.#native.device(); }
  get disposed(): boolean { return this.#native.disposed(); }
  get numel(): number { return this.shape.reduce((a, b) => a * b, 1); }

  /** A copy of the elements in row-major order. CPU tensors only: `await t.to('cpu')` first. */
  toTypedArray(): TensorData {
    const dtype = this.dtype as DType;
    const ctor = ARRAY_FOR[dtype];
    if (!ctor) {
      throw new TorchfoldError(`Tensors of dtype ${dtype} cannot be read from JavaScript`, 'ERR_UNSUPPORTED');
    }
    return new ctor(this.#native.toBuffer());
  }

  /** A copy on another device ('cpu', 'cuda', 'cuda:N'); this tensor is unchanged. */
  to(device: string): Promise<Tensor> {
    const d = parseDevice(device, 'device');
    return withCallerStack(async () => new Tensor(await Tensor.handle(this).to(d)));
  }

  /** Frees the native memory now. Idempotent. */
  dispose(): void {
    this.#native.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  [inspect.custom](): string {
    if (this.disposed) return 'Tensor <disposed>';
    return `Tensor ${this.dtype} [${this.shape.join(', ')}] on ${this.device}`;
  }
}
