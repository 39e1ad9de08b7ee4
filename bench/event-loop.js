#!/usr/bin/env node
'use strict';
// Measures how long the Node event loop stalls while torchfold loads a model,
// runs forwards, clones and saves it (perf_hooks.monitorEventLoopDelay, 1 ms
// resolution). Usage: node bench/event-loop.js [model.pt] [--shape 1,3,224,224]
const { monitorEventLoopDelay } = require('perf_hooks');
const fs = require('fs');
const os = require('os');
const path = require('path');
const tf = require('../dist');

async function measure(label, fn) {
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  const result = await fn();
  const ms = performance.now() - t0;
  h.disable();
  const row = { step: label, ms: +ms.toFixed(1), maxStallMs: +(h.max / 1e6).toFixed(1), p99StallMs: +(h.percentile(99) / 1e6).toFixed(1) };
  console.log(JSON.stringify(row));
  return result;
}

async function main() {
  const args = process.argv.slice(2);
  const shapeAt = args.indexOf('--shape');
  const shape = shapeAt >= 0 ? args.splice(shapeAt, 2)[1].split(',').map(Number) : null;
  const file = args[0] || path.join(__dirname, '..', 'models', 'demo.pt');
  const dims = shape || JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'models', 'demo.json'), 'utf8')).input.shape;
  console.log(JSON.stringify({ model: file, bytes: fs.statSync(file).size, libtorch: tf.versions.libtorch, threads: tf.getNumThreads() }));
  const m = await measure('load', () => tf.load(file));
  const x = tf.Tensor.from(new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.5), dims);
  await measure('forward x3', async () => { for (let i = 0; i < 3; i++) await m.forward(x); });
  const c = await measure('clone', () => m.clone());
  const out = path.join(os.tmpdir(), `torchfold-event-loop-${process.pid}.pt`);
  await measure('save', () => c.save(out));
  fs.rmSync(out, { force: true });
  await measure('dispose + gc', async () => { await m.dispose(); await c.dispose(); if (global.gc) global.gc(); });
}

main().catch((e) => { console.error(e); process.exit(1); });
