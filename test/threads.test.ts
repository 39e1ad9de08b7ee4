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

// torchfold's work runs on threads it owns (native/core/compute_pool.cc), named
// torchfold-cpuN (their OpenMP workers inherit the name), never on libuv's pool: OpenMP gives every calling thread its
// own team, and teams on libuv's four threads fought over the cores.
describe('compute threads', () => {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  const count = (env: Record<string, string | undefined>, code = 'console.log(tf.getComputeThreads())') =>
    Number(run({ TORCHFOLD_COMPUTE_THREADS: undefined, ...env }, code).stdout.trim());

  it('default: the usable CPUs divided by the intra-op threads, at least one', () => {
    expect(count({ TORCHFOLD_NUM_THREADS: '1' })).toBe(Math.max(1, cpus));
    expect(count({ TORCHFOLD_NUM_THREADS: String(2 * cpus) })).toBe(1);
    const intra = threadsWith({});
    expect(count({})).toBe(Math.max(1, Math.floor(cpus / intra)));
  });

  it('TORCHFOLD_COMPUTE_THREADS and setComputeThreads choose; bad values warn or throw', () => {
    expect(count({ TORCHFOLD_COMPUTE_THREADS: '3' })).toBe(3);
    expect(count({ TORCHFOLD_COMPUTE_THREADS: '3' }, 'tf.setComputeThreads(2); console.log(tf.getComputeThreads())')).toBe(2);
    const dflt = count({});
    for (const bad of ['abc', '0', '300']) {
      const r = run({ TORCHFOLD_COMPUTE_THREADS: bad }, 'console.log(tf.getComputeThreads())');
      expect(Number(r.stdout.trim()), bad).toBe(dflt);
      expect(r.stderr, bad).toMatch(/TORCHFOLD_COMPUTE_THREADS.*ignored/);
    }
    const thrown = run({}, `for (const v of [0, 257, 1.5, '2']) { try { tf.setComputeThreads(v); console.log('no throw'); } ` +
      `catch (e) { console.log(e.name, e.code, e.message); } }`).stdout.trim().split('\n');
    expect(thrown).toHaveLength(4);
    for (const line of thrown) expect(line).toMatch(/^RangeError ERR_INVALID_ARG Expected an integer from 1 to 256 for compute threads/);
  });

  it('forwards run on torchfold-cpu threads, as many as asked, and not on libuv\'s pool', () => {
    // libuv's only pool thread is kept busy by pbkdf2 for a long time; 16 forwards
    // must all settle meanwhile, on exactly the compute threads asked for.
    const file = path.join(ROOT, 'models', 'demo.pt');
    const code = `
      const fs = require('fs'), crypto = require('crypto');
      const names = () => fs.readdirSync('/proc/self/task').map((t) => fs.readFileSync('/proc/self/task/' + t + '/comm', 'utf8').trim());
      tf.setComputeThreads(2);
      let hashed = false;
      crypto.pbkdf2('x', 'y', 3e6, 32, 'sha512', () => { hashed = true; });
      (async () => {
        const m = await tf.load(${JSON.stringify(file)});
        const x = tf.Tensor.from(new Float32Array(3 * 64 * 64).fill(0.5), [1, 3, 64, 64]);
        const outs = await Promise.all(Array.from({ length: 16 }, () => m.forward(x)));
        console.log(JSON.stringify({ hashed, outs: outs.length, compute: new Set(names().filter((n) => /^torchfold-cpu\\d+$/.test(n))).size }));
        process.exit(0);
      })();`;
    const r = JSON.parse(run({ UV_THREADPOOL_SIZE: '1' }, code).stdout.trim());
    expect(r).toEqual({ hashed: false, outs: 16, compute: 2 });
  });
});
