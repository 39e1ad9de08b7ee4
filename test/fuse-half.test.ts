/**
 * Validation of half-precision models compares values, not the raw 16-bit
 * patterns: on PyTorch-made bfloat16 and float16 conv → BatchNorm models, a
 * fuse with validation folds the pair, and its maxAbsError is the largest
 * difference of the decoded outputs (a bit-pattern difference would be in the
 * thousands). The same through the CLI's --validate.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, Tensor, versions } from '../lib';
import { decode, FIXTURES, generation, ROOT } from './helpers/fixtures';
import { within } from './helpers/subdir';

type Tree = Parameters<typeof decode>[0];
const DIR = path.join(FIXTURES, 'fuse');
const cases = (JSON.parse(fs.readFileSync(path.join(DIR, 'manifest.json'), 'utf8')) as
  { cases: Record<string, { file: string; dtype: string; inputs: Tree[] }> }).cases;
const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');

describe.each(['bfloat16', 'float16'])('%s conv → BatchNorm', (dtype) => {
  const c = cases[`half_${dtype}`];
  // Debian's libtorch 1.13 has no float16 convolution on the CPU.
  const noKernels = dtype === 'float16' && generation(versions.libtorch) === '1.13';

  it.skipIf(noKernels)(`fuse({ validate }) folds it and reports the error in ${dtype} values${noKernels ? ' (skipped: libtorch 1.13 has no CPU float16 conv)' : ''}`, async () => {
    const m = await load(path.join(DIR, c.file));
    const x = decode(within('fuse', c.inputs[0]) as Tree) as Tensor;
    expect(x.dtype).toBe(dtype);
    const { module, report } = await m.fuse({ validate: { inputs: [x], atol: 0.05, rtol: 0.05 } });
    expect(report.folded).toBe(1);
    expect(report.validation!.passed).toBe(true);
    // The largest difference of the decoded outputs, computed here from the two modules.
    const [a, b] = [(await m.forward(x) as Tensor).toValues(), (await module.forward(x) as Tensor).toValues()];
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(Number(a[i]) - Number(b[i])));
    expect(report.validation!.maxAbsError).toBe(worst);
    expect(worst).toBeLessThan(0.5);  // raw bit patterns of these outputs differ by thousands
  });

  it.skipIf(noKernels)(`the CLI's --validate passes the folded model${noKernels ? ' (skipped: libtorch 1.13 has no CPU float16 conv)' : ''}`, () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-half-'));
    try {
      const r = spawnSync(process.execPath, [CLI, 'optimize', path.join(DIR, c.file), '--output', path.join(out, 'x.pt'),
        '--validate', '--atol', '0.05', '--rtol', '0.05', '--input-shape', '2,4,8,8', '--input-dtype', dtype, '--json', '-q'],
      { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
      expect(r.status, r.stderr + r.stdout).toBe(0);
      const result = (JSON.parse(r.stdout) as { results: { status: string; summary: { folded: number; maxAbsError: number } }[] }).results[0];
      expect(result.status).toBe('done');
      expect(result.summary.folded).toBe(1);
      expect(result.summary.maxAbsError).toBeLessThan(0.5);
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  });
});
