// Every dtype JS can exchange round-trips, through libtorch and through a
// TorchScript forward whose result PyTorch computed.
import { describe, expect, it } from 'vitest';
import { DType, load, Tensor } from '../lib';
import { expectMatches, inputsOf, model } from './helpers/fixtures';

const SAMPLES: Record<DType, () => ArrayLike<number | bigint> & { length: number }> = {
  float32: () => new Float32Array([1.5, -2.25, 3e-8, 65504]),
  float64: () => new Float64Array([Math.PI, -1e300, 5e-324, 0]),
  float16: () => new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001]), // 1, -2, max, min subnormal
  bfloat16: () => new Uint16Array([0x3f80, 0xc000, 0x7f7f, 0x0001]),
  int8: () => new Int8Array([-128, 127, 0, 1]),
  int16: () => new Int16Array([-32768, 32767, 0, 1]),
  int32: () => new Int32Array([-2147483648, 2147483647, 0, 1]),
  int64: () => new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n, 1n]),
  uint8: () => new Uint8Array([0, 255, 7, 1]),
  bool: () => new Uint8Array([1, 0, 0, 1]),
};

describe('dtypes', () => {
  for (const [dtype, make] of Object.entries(SAMPLES) as [DType, () => ArrayLike<number | bigint>][]) {
    it(`${dtype} round-trips bit for bit`, () => {
      const data = make();
      const t = Tensor.from(data as never, [2, 2], { dtype });
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual([2, 2]);
      expect(t.device).toBe('cpu');
      expect(Array.from(t.toTypedArray() as ArrayLike<number>)).toEqual(Array.from(data as ArrayLike<number>));
    });
  }

  it('each dtype goes through a TorchScript forward as PyTorch computed it', async () => {
    const f = model('dtypes');
    const m = await load(f.path);
    const seen = new Set<string>();
    for (const c of f.cases) {
      const inputs = inputsOf(c);
      seen.add((inputs[0] as Tensor).dtype);
      expectMatches(await m.run(c.method, ...inputs), c.output, 0, `${c.method}(${(inputs[0] as Tensor).dtype})`);
    }
    expect([...seen].sort()).toEqual(Object.keys(SAMPLES).sort());
  });

  it('a copy: changing the source array later does not change the tensor', () => {
    const data = new Float32Array([1, 2]);
    const t = Tensor.from(data);
    data[0] = 100;
    expect(Array.from(t.toTypedArray() as Float32Array)).toEqual([1, 2]);
  });

  it('a view into a larger buffer uses only its own bytes', () => {
    const big = new Float64Array([9, 1, 2, 9]);
    const view = big.subarray(1, 3);
    expect(Array.from(Tensor.from(view).toTypedArray() as Float64Array)).toEqual([1, 2]);
  });

  it('empty tensors and scalars (shape [])', () => {
    expect(Tensor.from(new Float32Array(0), [0, 3]).shape).toEqual([0, 3]);
    const s = Tensor.from(new Int32Array([5]), []);
    expect(s.shape).toEqual([]);
    expect(Array.from(s.toTypedArray() as Int32Array)).toEqual([5]);
  });

  it('bad arguments throw TypeError/RangeError synchronously', () => {
    expect(() => Tensor.from([1, 2] as never)).toThrow(TypeError);
    expect(() => Tensor.from(new Uint8ClampedArray(2) as never)).toThrow(TypeError);
    expect(() => Tensor.from(new Float32Array(4), [3])).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(4), [2, -2])).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(4), [2, 2.5] as never)).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(4), [4], { dtype: 'int32' })).toThrow(RangeError);
    expect(() => Tensor.from(new Uint16Array(4))).toThrow(/float16/);
    expect(() => Tensor.from(new Uint8Array([0, 2]), [2], { dtype: 'bool' })).toThrow(RangeError);
    expect(() => Tensor.from(new Float32Array(1), [1], null as never)).toThrow(TypeError);
    try {
      Tensor.from(new Float32Array(4), [3]);
    } catch (e) {
      expect((e as { code: string }).code).toBe('ERR_INVALID_ARG');
      expect((e as Error).message).toMatch(/^Expected a shape with 4 elements for shape but received/);
    }
  });
});
