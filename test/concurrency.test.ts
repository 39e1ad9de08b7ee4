// Load and concurrency: many forwards in flight on one module while fuse/save/clone
// run on it and dispose() lands in the middle; the addon in 4 worker_threads that
// fuse and run, one terminated mid-work. (Event-loop delay is measured by
// scripts/stress/load.js, not here: no timing assertions in unit tests.)
import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { load, ScriptModule, Tensor, TorchValue } from '../lib';
import { expectMatches, FIXTURES, inputsOf, model, ROOT, tmpDir } from './helpers/fixtures';

const dir = tmpDir('concurrency');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const f = model('convbn_scripted');
const c = f.cases[0];
const FOLD_ATOL = 1e-4;  // a folded module differs from PyTorch's unfused output by the fold's rounding

function settle<T>(p: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: { code?: string; message: string } }> {
  return p.then((value) => ({ ok: true as const, value }), (error) => ({ ok: false as const, error }));
}

async function expectRuns(m: ScriptModule, x: Tensor, atol: number, times = 3): Promise<void> {
  const outs = await Promise.all(Array.from({ length: times }, () => m.forward(x)));
  for (const out of outs) expectMatches(out, c.output, atol);
}

describe('one module under load', () => {
  it('200 forwards in flight while fuse/save/clone run and dispose() lands half-way: all correct', async () => {
    const N = 200;
    const m = await load(f.path);
    const [x] = inputsOf(c) as Tensor[];
    let settled = 0;
    let settledAtRelease = -1;
    let released: Promise<void> | undefined;
    const late: Record<string, Promise<unknown>> = {};
    const lateDone: Record<string, boolean> = {};
    const onSettle = () => {
      settled++;
      if (settled === N / 2) {
        // Queued right before dispose(): in flight when it is called, so they must finish.
        late.save = m.save(path.join(dir, 'late.pt'));
        late.clone = m.clone();
        for (const [k, p] of Object.entries(late)) {
          lateDone[k] = false;
          p.then(() => { lateDone[k] = true; }, () => { lateDone[k] = true; });
        }
        released = m.dispose().then(() => { settledAtRelease = settled; });
        expect(m.disposed).toBe(true);
      }
    };
    const runs: Promise<TorchValue>[] = [];
    const early: Record<string, Promise<unknown>> = {};
    for (let i = 0; i < N; i++) {
      const p = m.forward(x);
      p.then(onSettle, onSettle);
      runs.push(p);
      if (i === 10) {
        early.fuse = m.fuse();
        early.save = m.save(path.join(dir, 'early.pt'));
        early.clone = m.clone();
      }
    }
    const outs = await Promise.all(runs);
    expect(outs).toHaveLength(N);
    for (const out of outs) expectMatches(out, c.output, c.atol);
    expect(released).toBeDefined();
    await released;
    // dispose() resolved only once everything in flight had settled.
    expect(settledAtRelease).toBe(N);
    expect(lateDone).toEqual({ save: true, clone: true });

    // Calls after dispose() reject with ERR_DISPOSED.
    for (const call of [() => m.forward(x), () => m.save(path.join(dir, 'after.pt')), () => m.clone(), () => m.fuse()]) {
      await expect(call()).rejects.toMatchObject({ code: 'ERR_DISPOSED', message: expect.stringMatching(/disposed/) });
    }

    // What the concurrent calls produced computes the right thing.
    const { module: fused, report } = (await early.fuse) as { module: ScriptModule; report: { folded: number } };
    expect(report.folded).toBe(2);
    await expectRuns(fused, x, FOLD_ATOL);
    for (const key of ['early', 'late'] as const) {
      const copy = (await (key === 'early' ? early : late).clone) as ScriptModule;
      await expectRuns(copy, x, c.atol!);
      await (key === 'early' ? early : late).save;
      const reloaded = await load(path.join(dir, `${key}.pt`));
      await expectRuns(reloaded, x, c.atol!);
      await Promise.all([copy.dispose(), reloaded.dispose()]);
    }
    await fused.dispose();
  });

  it('disposing the fused and cloned modules while their own forwards run: the forwards finish', async () => {
    const m = await load(f.path);
    const [x] = inputsOf(c) as Tensor[];
    const [{ module: fused }, copy] = await Promise.all([m.fuse(), m.clone()]);
    const runs = [fused, copy, m].flatMap((mod) => Array.from({ length: 30 }, () => mod.forward(x)));
    const disposed = Promise.all([fused.dispose(), copy.dispose(), m.dispose()]);
    const outs = await Promise.all(runs);
    outs.forEach((out, i) => expectMatches(out, c.output, i < 30 ? FOLD_ATOL : c.atol));
    await disposed;
  });

  // fuse() runs the module for validation on the native handle it took when it
  // started, so dispose() waits for it instead of cutting it short.
  it('a fuse({ validate }) in flight when dispose() is called still finishes', async () => {
    const m = await load(f.path);
    const fusing = settle(m.fuse({ validate: { inputs: [[2, 3, 16, 16]] } }));
    await m.dispose();
    const r = await fusing;
    if (r.ok) await r.value.module.dispose();
    expect(r.ok ? 'resolved' : r.error.code).toBe('resolved');
  });
});

// One worker (scripts/stress/fuse-worker.js): load, fuse, 20 forwards on each module at once.
const WORKER = path.join(ROOT, 'scripts', 'stress', 'fuse-worker.js');

interface Started { worker: Worker; busy: Promise<void>; done: Promise<{ plain?: number; fused?: number; error?: string }>; exit: Promise<number> }

function start(): Started {
  const input = (c.inputs[0] as { __tensor__: { file: string; shape: number[] } }).__tensor__;
  const output = (c.output as { __tensor__: { file: string } }).__tensor__;
  const worker = new Worker(WORKER, { workerData: {
    dist: path.join(ROOT, 'dist', 'index.js'), model: f.path, shape: input.shape, forwards: 20,
    input: path.join(FIXTURES, input.file), output: path.join(FIXTURES, output.file) } });
  let onBusy!: () => void;
  const busy = new Promise<void>((resolve) => { onBusy = resolve; });
  const done = new Promise<{ plain?: number; fused?: number; error?: string }>((resolve) => {
    worker.on('message', (msg) => {
      if (msg.stage === 'busy') onBusy();
      if (msg.stage === 'done') resolve(msg);
      if (msg.stage === 'error') { onBusy(); resolve({ error: `${msg.code}: ${msg.message}` }); }
    });
    worker.on('error', (e) => { onBusy(); resolve({ error: e.message }); });
    worker.on('exit', () => { onBusy(); resolve({ error: 'exited without a result' }); });
  });
  const exit = new Promise<number>((resolve) => worker.on('exit', resolve));
  return { worker, busy, done, exit };
}

describe('worker_threads under load', () => {
  it('4 workers load, fuse and run at once; one terminated mid-work; the others are right and the process lives', async () => {
    const workers = [start(), start(), start(), start()];
    // Stop the second one while its fuse and forwards are in flight.
    await workers[1].busy;
    await workers[1].worker.terminate();
    const results = await Promise.all(workers.map((w) => w.done));
    const codes = await Promise.all(workers.map((w) => w.exit));
    results.forEach((r, i) => {
      // On a starved machine the stopped worker may have finished first: then it must be right too.
      if (i === 1 && r.error) return;
      expect(r.error, `worker ${i}`).toBeUndefined();
      expect(r.plain!, `worker ${i} unfused`).toBeLessThanOrEqual(c.atol!);
      expect(r.fused!, `worker ${i} fused`).toBeLessThanOrEqual(FOLD_ATOL);
    });
    expect(codes.filter((_, i) => i !== 1)).toEqual([0, 0, 0]);
    expect(codes[1]).toBe(results[1].error ? 1 : 0);  // 1: terminate()'s exit code

    // The addon keeps working on this thread and in a fresh worker.
    const m = await load(f.path);
    expectMatches(await m.forward(...inputsOf(c)), c.output, c.atol);
    await m.dispose();
    const again = await start().done;
    expect(again.error).toBeUndefined();
    expect(again.plain!).toBeLessThanOrEqual(c.atol!);
  });
});
