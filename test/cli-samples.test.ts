// The CLI's sample inputs: float16/bfloat16 bits rounded exactly as PyTorch rounds the float32 samples.
import { execFileSync } from 'child_process';
import { describe, expect, it } from 'vitest';
import { halfBits, sampleTensor } from '../lib/cli/samples';
import { PYTHON } from './helpers/fixtures';

function torchBits(values: Float32Array, dtype: string): number[] {
  const out = execFileSync(PYTHON, ['-c', `import sys, torch
x = torch.frombuffer(bytearray(sys.stdin.buffer.read()), dtype=torch.float32)
sys.stdout.buffer.write(x.to(torch.${dtype}).view(torch.int16).numpy().tobytes())`], { input: Buffer.from(values.buffer) });
  return Array.from(new Uint16Array(out.buffer, out.byteOffset, out.length / 2));
}

describe('sample inputs', () => {
  for (const dtype of ['float16', 'bfloat16'] as const) {
    it(`${dtype}: the samples are PyTorch's rounding of the float32 samples`, () => {
      const f32 = sampleTensor([4, 1000], 'float32', 7).toTypedArray() as Float32Array;
      const half = sampleTensor([4, 1000], dtype, 7).toTypedArray() as Uint16Array;
      expect(Array.from(half)).toEqual(torchBits(f32, dtype));
    });

    it(`${dtype}: ties, tiny, huge and subnormal values round as in PyTorch`, () => {
      const edge = new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 2 ** -20, 2 ** -24,
        2 ** -25, 3 * 2 ** -26, 1e-8, 65504, 65519, 65520, 70000, -0, -1.5, 3.4e38, -(2 ** -14), 6.1e-5]);
      expect(Array.from(edge, (v) => halfBits(v, dtype))).toEqual(torchBits(edge, dtype));
    });
  }
});
