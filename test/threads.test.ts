// The default intra-op thread count: at least two where two CPUs are available (libtorch's own
// default is one per physical core, which sends 1x1 convolutions to its slow reference-BLAS path),
// unless the user chose: TORCHFOLD_NUM_THREADS, OMP_NUM_THREADS, or setNumThreads().
import { execFileSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/fixtures';

function threadsWith(env: Record<string, string | undefined>, code = 'console.log(tf.getNumThreads())'): number {
  const clean = { ...process.env };
  delete clean.OMP_NUM_THREADS;
  delete clean.MKL_NUM_THREADS;
  delete clean.TORCHFOLD_NUM_THREADS;
  const out = execFileSync(process.execPath, ['-e', `const tf = require(${JSON.stringify(path.join(ROOT, 'dist'))}); ${code}`],
    { env: { ...clean, ...env }, encoding: 'utf8' });
  return Number(out.trim());
}

describe('default threads', () => {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  it('uses at least two threads when two CPUs are available, else the default of libtorch', () => {
    const libtorchDefault = threadsWith({ OMP_NUM_THREADS: undefined, TORCHFOLD_NUM_THREADS: undefined });
    if (cpus >= 2) expect(libtorchDefault).toBeGreaterThanOrEqual(2);
    else expect(libtorchDefault).toBe(1);
  });
  it('TORCHFOLD_NUM_THREADS and OMP_NUM_THREADS win, and setNumThreads wins over both', () => {
    expect(threadsWith({ TORCHFOLD_NUM_THREADS: '3' })).toBe(3);
    expect(threadsWith({ OMP_NUM_THREADS: '1' })).toBe(1);
    expect(threadsWith({ TORCHFOLD_NUM_THREADS: '3' }, 'tf.setNumThreads(1); console.log(tf.getNumThreads())')).toBe(1);
  });
});
