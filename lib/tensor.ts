/**
 * Tensors cross the boundary by copy: Tensor.from() copies a typed array into
 * libtorch memory, toTypedArray() copies back out. A Tensor holds native
 * memory until dispose() (or garbage collection).
 */
import { inspect } from 'util';
import { native, NativeTensor } from './binding';
import { rangeError, TorchfoldError, typeError, withCallerStack } from './errors';
import { parseDevice } from './validate';

/**
 * The element types a {@link Tensor} can be made from and read into. Tensors
 * that modules return may have others (e.g. complex): their `dtype` then names
 * libtorch's type, and `toTypedArray()` throws `ERR_UNSUPPORTED`.
 */
export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16'
  | 'int8' | 'int16' | 'int32' | 'int64' | 'uint8' | 'bool';

/**
 * The typed arrays tensor data travels in. Each dtype has one: float32
 * `Float32Array`, float64 `Float64Array`, int8/int16/int32 `Int8Array`/
 * `Int16Array`/`Int32Array`, int64 `BigInt64Array`, uint8 and bool
 * `Uint8Array` (bool as 0/1), float16 and bfloat16 `Uint16Array` of raw bits.
 */
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

/** Options of {@link Tensor.from}. */
export interface TensorFromOptions {
  /**
   * The tensor's dtype: one the typed array can carry. Needed for
   * float16/bfloat16 (raw bits in a Uint16Array) and for bool (a Uint8Array of
   * 0/1); any other mismatch with the array throws a RangeError.
   *
   * @defaultValue `undefined`: the array's own dtype (`'float32'` for a Float32Array,
   * `'uint8'` for a Uint8Array, ...); a Uint16Array has none and must say.
   */
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
  return shape.slice() as number[];
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

/**
 * A libtorch tensor held from JavaScript. Data is copied both ways: {@link
 * Tensor.from} copies a typed array in, {@link Tensor.toTypedArray} copies out.
 * The native memory is freed by {@link Tensor.dispose} (or, later, by garbage
 * collection); `using t = Tensor.from(...)` disposes at the end of the scope.
 */
export class Tensor {
  #native: NativeTensor;

  /** @internal Use Tensor.from(), or receive tensors from a module. */
  constructor(handle: NativeTensor) {
    this.#native = handle;
  }

  /**
   * Copies `data` into a new CPU tensor.
   *
   * @param data - The elements in row-major order; see {@link TensorData}.
   * @param shape - Sizes whose product is `data.length`. Default: `[data.length]` (1-D).
   * @param options - See {@link TensorFromOptions}.
   * @throws TypeError (`ERR_INVALID_ARG`) when `data` is not a supported typed array, or a
   * Uint16Array comes without a dtype. RangeError (`ERR_INVALID_ARG`) when the shape does not hold
   * `data.length` elements, the dtype does not fit the array, or a bool tensor has values other than 0 and 1.
   *
   * @example
   * ```ts
   * const x = Tensor.from(new Float32Array(2 * 3 * 8 * 8), [2, 3, 8, 8]);
   * const mask = Tensor.from(new Uint8Array([1, 0, 1]), [3], { dtype: 'bool' });
   * const half = Tensor.from(new Uint16Array([0x3c00]), [1], { dtype: 'float16' }); // 1.0
   * ```
   */
  static from(data: TensorData, shape?: readonly number[], options: TensorFromOptions = {}): Tensor {
    if (!ArrayBuffer.isView(data) || data instanceof DataView) {
      throw typeError('a typed array', 'data', data);
    }
    if (options === null || typeof options !== 'object') throw typeError('an object', 'options', options);
    const dtype = pickDType(data, options);
    const dims = checkShape(shape ?? [data.length], data.length);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return new Tensor(native().tensorFromBuffer(bytes, dtype, dims));
  }

  /** @internal */
  static handle(t: Tensor): NativeTensor {
    if (t.#native.disposed()) throw new TorchfoldError('The tensor has been disposed', 'ERR_DISPOSED');
    return t.#native;
  }

  /** The sizes of each dimension (a fresh array); `[]` for a scalar. */
  get shape(): number[] { return this.#native.shape(); }
  /** The element type: a {@link DType}, or libtorch's name for others (e.g. `'complex64'`). */
  get dtype(): string { return this.#native.dtype(); }
  /** Where the data lives: `'cpu'` or `'cuda:N'`. */
  get device(): string { return this.#native.device(); }
  /** Whether {@link Tensor.dispose} has been called. */
  get disposed(): boolean { return this.#native.disposed(); }
  /** The number of elements: the product of the shape. */
  get numel(): number { return this.shape.reduce((a, b) => a * b, 1); }

  /**
   * A copy of the elements in row-major order, in the typed array of the dtype
   * (see {@link TensorData}). CPU tensors only: `await t.to('cpu')` first.
   *
   * @throws TorchfoldError `ERR_UNSUPPORTED` for a dtype with no typed array (e.g. complex).
   */
  toTypedArray(): TensorData {
    const dtype = this.dtype as DType;
    const ctor = ARRAY_FOR[dtype];
    if (!ctor) {
      throw new TorchfoldError(`Tensors of dtype ${dtype} cannot be read from JavaScript`, 'ERR_UNSUPPORTED');
    }
    return new ctor(this.#native.toBuffer());
  }

  /**
   * The elements as values, in row-major order: {@link Tensor.toTypedArray}, except that
   * float16 and bfloat16 come decoded into a `Float32Array` (which holds every
   * half-precision value exactly) instead of their raw bits. Compare outputs with this.
   * CPU tensors only.
   */
  toValues(): TensorData {
    const data = this.toTypedArray();
    if (this.dtype === 'float16') return float16Values(data as Uint16Array);
    if (this.dtype === 'bfloat16') return bfloat16Values(data as Uint16Array);
    return data;
  }

  /**
   * A copy on another device; this tensor is unchanged.
   *
   * @param device - `'cpu'`, `'cuda'` or `'cuda:N'`.
   * @throws RangeError (`ERR_INVALID_ARG`) for another device string. Rejects with
   * `ERR_DEVICE_UNAVAILABLE` without that device, `ERR_DISPOSED` after {@link Tensor.dispose}.
   */
  to(device: string): Promise<Tensor> {
    const d = parseDevice(device, 'device');
    return withCallerStack(async () => new Tensor(await Tensor.handle(this).to(d)));
  }

  /** Frees the native memory now. Idempotent. */
  dispose(): void {
    this.#native.dispose();
  }

  /** {@link Tensor.dispose}, for `using`. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** What `console.log` and `util.inspect` show: dtype, shape and device. */
  [inspect.custom](): string {
    if (this.disposed) return 'Tensor <disposed>';
    return `Tensor ${this.dtype} [${this.shape.join(', ')}] on ${this.device}`;
  }
}

/** IEEE 754 binary16 bit patterns to their values. */
function float16Values(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i];
    const sign = b & 0x8000 ? -1 : 1;
    const exp = (b >> 10) & 0x1f;
    const frac = b & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;  // zero and subnormals
    else if (exp === 0x1f) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** bfloat16 bit patterns to their values: the top half of a float32. */
function bfloat16Values(bits: Uint16Array): Float32Array {
  const wide = new Uint32Array(bits.length);
  for (let i = 0; i < bits.length; i++) wide[i] = bits[i] << 16;
  return new Float32Array(wide.buffer);
}
