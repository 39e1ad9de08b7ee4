/** Sample inputs for validate/optimize/bench from --input-shape and --input-dtype: seeded, the same on every run. */
import { seededNormal } from '../fuse';
import { DType, Tensor } from '../tensor';

const F32 = new Float32Array(1);
const U32 = new Uint32Array(F32.buffer);

/** float32 -> bfloat16 bits, round to nearest even. */
function toBf16(x: number): number {
  F32[0] = x;
  const u = U32[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 -> IEEE half bits, round to nearest even (normal range: samples are N(0,1)). */
function toF16(x: number): number {
  F32[0] = x;
  const u = U32[0];
  const sign = (u >>> 16) & 0x8000;
  const exp = ((u >>> 23) & 0xff) - 127 + 15;
  let mant = u & 0x7fffff;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    const half = mant >>> shift, rest = mant & ((1 << shift) - 1), mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && (half & 1)) ? 1 : 0));
  }
  if (exp >= 31) return sign | 0x7c00;
  const rest = mant & 0x1fff;
  let bits = sign | (exp << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (bits & 1))) bits += 1;
  return bits;
}

/** The float16 or bfloat16 bits of a float32 value, rounded to nearest even. */
export function halfBits(x: number, dtype: 'float16' | 'bfloat16'): number {
  return dtype === 'float16' ? toF16(x) : toBf16(x);
}

export function sampleTensor(shape: number[], dtype: DType, seed: number): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const normal = seededNormal(n, seed);
  switch (dtype) {
    case 'float32': return Tensor.from(normal, shape);
    case 'float64': return Tensor.from(Float64Array.from(normal), shape);
    case 'float16': return Tensor.from(Uint16Array.from(normal, toF16), shape, { dtype });
    case 'bfloat16': return Tensor.from(Uint16Array.from(normal, toBf16), shape, { dtype });
    case 'bool': return Tensor.from(Uint8Array.from(normal, (v) => (v > 0 ? 1 : 0)), shape, { dtype });
    default: {
      // Small non-negative integers: valid indices for embeddings and gathers.
      const ints = Array.from(normal, (v) => Math.min(9, Math.floor(Math.abs(v) * 3)));
      if (dtype === 'int64') return Tensor.from(BigInt64Array.from(ints, BigInt), shape);
      const Ctor = { int32: Int32Array, int16: Int16Array, int8: Int8Array, uint8: Uint8Array }[dtype];
      return Tensor.from(Ctor.from(ints), shape);
    }
  }
}

/** One forward call's inputs, moved to `device`. */
export async function sampleInputs(shapes: number[][], dtypes: DType[], device: string, seed = 0): Promise<Tensor[]> {
  const out: Tensor[] = [];
  for (let i = 0; i < shapes.length; i++) {
    const t = sampleTensor(shapes[i], dtypes[i] ?? dtypes[0] ?? 'float32', seed + i);
    out.push(device === 'cpu' ? t : await t.to(device));
  }
  return out;
}
