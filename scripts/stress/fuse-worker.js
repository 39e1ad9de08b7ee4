'use strict';
// A worker_threads body for the load scenario (scripts/stress/load.js) and
// test/concurrency.test.ts: load the addon and a model, fuse it, run forwards on
// the model and on the fused module at once, and report the largest difference
// from PyTorch's output for each. Posts { stage: 'loaded' | 'busy' | 'done' | 'error' }.
// workerData: { dist, model, input, output (raw float32 files), shape, forwards }
const { parentPort, workerData: d } = require('worker_threads');
const fs = require('fs');

const read = (f) => { const b = fs.readFileSync(f); return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)); };

(async () => {
  const tf = require(d.dist);
  const expected = read(d.output);
  const x = tf.Tensor.from(read(d.input), d.shape);
  const m = await tf.load(d.model);
  parentPort.postMessage({ stage: 'loaded' });
  const fusing = m.fuse();
  const plain = [];
  for (let i = 0; i < d.forwards; i++) plain.push(m.forward(x));
  parentPort.postMessage({ stage: 'busy' });
  const { module: fused, report } = await fusing;
  const folded = [];
  for (let i = 0; i < d.forwards; i++) folded.push(fused.forward(x));
  const worst = (outs) => outs.reduce((w, y) => {
    const a = y.toValues();
    y.dispose();
    if (a.length !== expected.length) return Infinity;
    for (let i = 0; i < a.length; i++) { const e = Math.abs(a[i] - expected[i]); if (!(e <= w)) w = e; }
    return w;
  }, 0);
  const result = { stage: 'done', plain: worst(await Promise.all(plain)), fused: worst(await Promise.all(folded)),
    forwards: 2 * d.forwards, folded: report.folded };
  await fused.dispose();
  await m.dispose();
  x.dispose();
  parentPort.postMessage(result);
})().catch((e) => parentPort.postMessage({ stage: 'error', code: e.code, message: String(e.message).slice(0, 300) }));
