// The default intra-op thread count: at least two where two CPUs are available (libtorch's own
// default is one per physical core, which sends 1x1 convolutions to its slow reference-BLAS path),
// unless the user chose: TORCHFOLD_NUM_THREADS, OMP_NUM_THREADS, or setNumThreads().
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/fixtures';

function run(env: Record<string, string | undefined>, code: string): { stdout: string; stderr: string } {
  const clean = { ...process.env };
  delete clean.OMP_NUM_THREADS;
  delete clean.MKL_NUM_THREADS;
  delete clean.TORCHFOLD_NUM_THREADS;
  const r = spawnSync(process.execPath, ['-e', `const tf = require(${JSON.stringify(path.join(ROOT, 'dist'))}); ${code}`],
    { env: { ...clean, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return { stdout: r.stdout, stderr: r.stderr };
}

function threadsWith(env: Record<string, string | undefined>, code = 'console.log(tf.getNumThreads())'): number {
  return Number(run(env, code).stdout.trim());
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
  it('a TORCHFOLD_NUM_THREADS that is not a thread count is ignored, with a warning', () => {
    const unset = threadsWith({});
    for (const bad of ['abc', '0', '2x', '-1', '5000']) {
      const r = run({ TORCHFOLD_NUM_THREADS: bad }, 'console.log(tf.getNumThreads())');
      expect(Number(r.stdout.trim()), bad).toBe(unset);
      expect(r.stderr, bad).toMatch(/TORCHFOLD_NUM_THREADS.*ignored/);
    }
    const good = run({ TORCHFOLD_NUM_THREADS: '3' }, 'console.log(tf.getNumThreads())');
    expect(good.stderr).not.toMatch(/TORCHFOLD_NUM_THREADS/);
  });
});
