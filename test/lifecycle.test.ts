// Disposal, concurrency, threads and the event loop.
import { describe, expect, it } from 'vitest';
import { getNumThreads, load, setNumThreads, Tensor, TorchfoldError } from '../lib';
import { expectMatches, inputsOf, model } from './helpers/fixtures';

describe('dispose', () => {
  it('use after dispose gives ERR_DISPOSED; dispose is idempotent', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    expect(m.disposed).toBe(false);
    await m.dispose();
    await m.dispose();
    expect(m.disposed).toBe(true);
    await expect(m.forward(...inputsOf(f.cases[0]))).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    await expect(m.save('/tmp/x.pt')).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    await expect(m.clone()).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    expect(() => m.graph()).toThrow(TorchfoldError);
    expect(() => m.parameters()).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    expect(() => m.eval()).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
  });

  it('a dispose while forwards are in flight waits for them; they finish correctly', async () => {
    const f = model('resnet18_scripted');
    const m = await load(f.path);
    const runs = [0, 1, 2].map(() => m.forward(...inputsOf(f.cases[0])));
    const released = m.dispose();
    expect(m.disposed).toBe(true);
    const outs = await Promise.all(runs);
    for (const out of outs) expectMatches(out, f.cases[0].output, f.cases[0].atol);
    await released;
    await expect(m.forward(...inputsOf(f.cases[0]))).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });

  it('Symbol.dispose and Symbol.asyncDispose dispose', async () => {
    const m = await load(model('convbn_scripted').path);
    m[Symbol.dispose]();
    expect(m.disposed).toBe(true);
    const n = await load(model('convbn_scripted').path);
    await n[Symbol.asyncDispose]();
    expect(n.disposed).toBe(true);
  });

  it('tensors: dispose, ERR_DISPOSED after, a disposed input rejects', async () => {
    const t = Tensor.from(new Float32Array([1, 2]));
    t.dispose();
    t[Symbol.dispose]();
    expect(t.disposed).toBe(true);
    expect(() => t.toTypedArray()).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    expect(() => t.shape).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    await expect(t.to('cpu')).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    const m = await load(model('dtypes').path);
    await expect(m.forward(t)).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });

  it('disposing an input tensor right after the call does not disturb the call', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    const [x] = inputsOf(f.cases[0]) as Tensor[];
    const p = m.forward(x);
    x.dispose();
    expectMatches(await p, f.cases[0].output);
  });
});

describe('concurrency', () => {
  it('many concurrent forwards on one module all give the right results', async () => {
    const f = model('convbn_scripted');
    const m = await load(f.path);
    const c = f.cases[0];
    // Interleave the PyTorch-checked input with others whose results are compared
    // against a sequential run of the same module.
    const others = Array.from({ length: 8 }, (_, k) =>
      Tensor.from(Float32Array.from({ length: 2 * 3 * 16 * 16 }, (_, i) => Math.sin(i * (k + 1))), [2, 3, 16, 16]));
    const sequential: Float32Array[] = [];
    for (const o of others) sequential.push((await m.forward(o) as Tensor).toTypedArray() as Float32Array);
    const jobs: Promise<void>[] = [];
    for (let round = 0; round < 4; round++) {
      jobs.push(m.forward(...inputsOf(c)).then((out) => expectMatches(out, c.output)));
      others.forEach((o, k) => jobs.push(m.forward(o).then((out) => {
        expect((out as Tensor).toTypedArray()).toEqual(sequential[k]);
      })));
    }
    await Promise.all(jobs);
    expect(jobs).toHaveLength(36);
  });

  it('setNumThreads applies to work on pool threads', async () => {
    const before = getNumThreads();
    setNumThreads(2);
    expect(getNumThreads()).toBe(2);
    const f = model('resnet18_traced');
    const m = await load(f.path);
    expectMatches(await m.forward(...inputsOf(f.cases[0])), f.cases[0].output, f.cases[0].atol);
    setNumThreads(before);
    expect(getNumThreads()).toBe(before);
  });
});

describe('event loop', () => {
  it('load and forward run off the JS thread: timers keep firing meanwhile', async () => {
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 1);
    const f = model('resnet18_scripted');
    const started = performance.now();
    const m = await load(f.path);
    for (let i = 0; i < 3; i++) await m.forward(...inputsOf(f.cases[0]));
    const elapsed = performance.now() - started;
    clearInterval(timer);
    // Not a speed assertion: if the work blocked the loop, no tick could run
    // until it ended. With it on the pool, ticks run throughout.
    expect(elapsed).toBeGreaterThan(20);
    expect(ticks).toBeGreaterThan(2);
  });
});
