// CUDA: runs where a GPU is visible, and is skipped, visibly, where none is.
import { describe, expect, it } from 'vitest';
import { cuda, DType, load, Tensor, TensorData, versions } from '../lib';
import { expectMatches, inputsOf, model } from './helpers/fixtures';

const available = cuda.isAvailable();
if (!available) {
  console.warn(`CUDA tests skipped: no CUDA device visible (libtorch ${versions.libtorch}, ` +
    `CUDA build: ${versions.cudaBuild})`);
}

describe('cuda facts', () => {
  it('isAvailable and deviceCount agree', () => {
    expect(typeof available).toBe('boolean');
    expect(cuda.deviceCount() > 0).toBe(available);
    if (!versions.cudaBuild) expect(available).toBe(false);
  });
});

describe.skipIf(!available)('on CUDA (skipped: no CUDA device on this machine)', () => {
  it('load({ device: "cuda" }) places the module on the GPU and matches PyTorch', async () => {
    const f = model('resnet18_scripted');
    const m = await load(f.path, { device: 'cuda' });
    expect(m.device).toBe('cuda:0');
    expect(m.parameters().every((p) => p.device === 'cuda:0')).toBe(true);
    const inputs = await Promise.all(inputsOf(f.cases[0]).map((t) => (t as Tensor).to('cuda')));
    const out = (await m.forward(...inputs)) as Tensor;
    expect(out.device).toBe('cuda:0');
    expect(() => out.toTypedArray()).toThrow(/to\('cpu'\)/);
    expectMatches(await out.to('cpu'), f.cases[0].output, 1e-3);
  });

  it('module.to("cuda") copies; the original stays on the CPU', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    const g = await m.to('cuda:0');
    expect(m.device).toBe('cpu');
    expect(g.device).toBe('cuda:0');
    const x = await (inputsOf(f.cases[0])[0] as Tensor).to('cuda');
    expectMatches(await ((await g.forward(x)) as Tensor).to('cpu'), f.cases[0].output, 1e-4);
  });

  it('every dtype survives a round trip through the GPU', async () => {
    const samples: [DType, TensorData][] = [
      ['float32', new Float32Array([1, -2, 3, 0])], ['float64', new Float64Array([1, -2, 3, 0])],
      ['float16', new Uint16Array([0x3c00, 0xc000, 1, 0])], ['bfloat16', new Uint16Array([0x3f80, 0xc000, 1, 0])],
      ['int8', new Int8Array([1, -2, 3, 0])], ['int16', new Int16Array([1, -2, 3, 0])],
      ['int32', new Int32Array([1, -2, 3, 0])], ['int64', new BigInt64Array([1n, -2n, 3n, 0n])],
      ['uint8', new Uint8Array([1, 2, 3, 0])], ['bool', new Uint8Array([1, 0, 1, 0])],
    ];
    for (const [dtype, data] of samples) {
      const t = Tensor.from(data, [4], { dtype });
      const onGpu = await t.to('cuda');
      expect(onGpu.device).toBe('cuda:0');
      const back = await onGpu.to('cpu');
      expect(back.dtype).toBe(dtype);
      expect(Array.from(back.toTypedArray() as ArrayLike<number>)).toEqual(Array.from(data as ArrayLike<number>));
    }
  });

  it('saving a CUDA module writes a file that loads on the CPU', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path, { device: 'cuda' });
    const file = `${process.cwd()}/.tmp/cuda-save-${process.pid}.pt`;
    await m.save(file);
    const back = await load(file);
    expect(back.device).toBe('cpu');
    expectMatches(await back.forward(...inputsOf(f.cases[0])), f.cases[0].output, 1e-4);
  });
});
