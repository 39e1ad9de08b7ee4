// The addon in several worker_threads at once (per-environment state, no static references).
import * as path from 'path';
import { Worker } from 'worker_threads';
import { describe, expect, it } from 'vitest';
import { model, ROOT } from './helpers/fixtures';

const SCRIPT = `
const { parentPort, workerData } = require('worker_threads');
const tf = require(workerData.dist);
const fs = require('fs');
(async () => {
  const m = await tf.load(workerData.model);
  const bytes = fs.readFileSync(workerData.input);
  const x = new Float32Array(new Uint8Array(bytes).buffer);
  const y = await m.forward(tf.Tensor.from(x, workerData.shape));
  const out = Array.from(y.toTypedArray());
  await m.dispose();
  parentPort.postMessage({ out, isError: new tf.TorchfoldError('x', 'ERR_TORCH') instanceof Error });
})().catch((e) => parentPort.postMessage({ error: e.message }));
`;

function runInWorker(data: object): Promise<{ out?: number[]; error?: string }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(SCRIPT, { eval: true, workerData: data });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

describe('worker_threads', () => {
  it('two workers load and run models at the same time, with PyTorch\'s results', async () => {
    const f = model('convbn_scripted');
    const c = f.cases[0];
    const input = (c.inputs[0] as { __tensor__: { file: string; shape: number[] } }).__tensor__;
    const expectedRef = (c.output as { __tensor__: { file: string } }).__tensor__;
    const fs = await import('fs');
    const bytes = fs.readFileSync(path.join(ROOT, 'test', 'fixtures', expectedRef.file));
    const expected = Array.from(new Float32Array(new Uint8Array(bytes).buffer));
    const data = {
      dist: path.join(ROOT, 'dist', 'index.js'),
      model: f.path,
      input: path.join(ROOT, 'test', 'fixtures', input.file),
      shape: input.shape,
    };
    const results = await Promise.all([runInWorker(data), runInWorker(data), runInWorker(data)]);
    for (const r of results) {
      expect(r.error).toBeUndefined();
      expect(r.out).toHaveLength(expected.length);
      r.out!.forEach((v, i) => expect(Math.abs(v - expected[i])).toBeLessThanOrEqual(1e-5));
    }
    // And once more after those environments were torn down.
    expect((await runInWorker(data)).error).toBeUndefined();
  });
});

describe('worker_threads teardown', () => {
  it('terminating a worker while its forwards and saves are in flight leaves the process alive', async () => {
    const f = model('resnet18_scripted');
    const script = `
      const { parentPort, workerData } = require('worker_threads');
      const tf = require(workerData.dist);
      (async () => {
        const m = await tf.load(workerData.model);
        const x = tf.Tensor.from(new Float32Array(3 * 64 * 64), [1, 3, 64, 64]);
        for (let i = 0; i < 3; i++) m.forward(x).catch(() => {});
        m.save(workerData.out).catch(() => {});
        parentPort.postMessage('started');
      })();`;
    for (let round = 0; round < 3; round++) {
      const w = new Worker(script, { eval: true, workerData: {
        dist: path.join(ROOT, 'dist', 'index.js'), model: f.path, out: path.join(ROOT, '.tmp', `terminate-${process.pid}.pt`) } });
      await new Promise((resolve) => w.once('message', resolve));
      await w.terminate();
    }
    // Still here, and the addon still works in this process.
    const tf = await import('../lib');
    expect((await tf.load(f.path)).methods).toContain('forward');
  });
});
