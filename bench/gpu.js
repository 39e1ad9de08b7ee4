#!/usr/bin/env node
'use strict';
/**
 * A short CUDA benchmark (scripts/gpu-check.sh runs it on the GPU machine):
 * ResNet-50 at batch 1 and 32, float32 and float16, on the GPU:
 *   loaded        the module as loaded onto the GPU
 *   tf.fold       fuse()
 *   tf.optimize   fuse({ optimize })
 *   half          the loaded module through toHalf() (float16 Linear/Conv, casts at the boundary)
 *   tf.fold+half  the folded module through toHalf()
 * Every call copies its output back to the CPU, which waits for the GPU: the
 * times include the kernels, not only their launch (CUDA synchronisation).
 * Variants are timed interleaved in rounds after a warm-up; ratios are paired
 * by round against `loaded` of the same batch. Each variant's output is compared
 * with the loaded module's (float32) by value.
 *
 *   node bench/gpu.js MODEL.pt [--batches 1,32] [--iterations N] [--json OUT.json]
 */
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const tf = require(path.join(ROOT, 'dist'));
const { latencyStats, pairedRatio, seededNormal, timeRounds } = require(path.join(ROOT, 'dist', 'fuse'));

function parseArgs(argv) {
  const a = { model: argv[0], batches: [1, 32], iterations: 30, warmup: 5, json: null };
  for (let i = 1; i < argv.length; i++) {
    if (argv[i] === '--batches') a.batches = argv[++i].split(',').map(Number);
    else if (argv[i] === '--iterations') a.iterations = Number(argv[++i]);
    else if (argv[i] === '--json') a.json = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!a.model) throw new Error('usage: node bench/gpu.js MODEL.pt [--batches 1,32] [--iterations N] [--json OUT]');
  return a;
}

async function maxAbsDiff(a, b) {
  const [x, y] = [(await a.to('cpu')).toValues(), (await b.to('cpu')).toValues()];
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(Number(x[i]) - Number(y[i])));
  return worst;
}

async function benchBatch(loaded, batch, o) {
  const shape = [batch, 3, 224, 224];
  const x = await tf.Tensor.from(seededNormal(shape.reduce((p, q) => p * q, 1), batch), shape).to('cuda');
  const variants = [{ name: 'loaded', module: loaded, ms: 0 }];
  const add = async (name, make) => {
    const t0 = performance.now();
    try {
      variants.push({ name, ...(await make()), ms: performance.now() - t0 });
    } catch (e) {
      variants.push({ name, error: `${e.code ?? ''} ${e.message.split('\n')[0]}`, ms: performance.now() - t0 });
    }
  };
  await add('tf.fold', async () => ({ module: (await loaded.fuse()).module }));
  await add('tf.optimize', async () => {
    const r = await loaded.fuse({ optimize: { inputs: [x], iterations: 10 } });
    return { module: r.module, detail: r.report.optimize?.chosen };
  });
  await add('half', async () => ({ module: (await loaded.toHalf({ dtype: 'float16' })).module }));
  const fold = variants.find((v) => v.name === 'tf.fold')?.module;
  if (fold) await add('tf.fold+half', async () => ({ module: (await fold.toHalf({ dtype: 'float16' })).module }));
  const live = variants.filter((v) => v.module);
  const reference = await loaded.forward(x);
  for (const v of live) v.maxAbsErr = await maxAbsDiff(await v.module.forward(x), reference);
  const runners = live.map((v) => async (xs) => { await (await v.module.forward(...xs)).to('cpu'); });
  const samples = await timeRounds(runners, [x], o.iterations, o.warmup);
  live.forEach((v, i) => {
    Object.assign(v, latencyStats(samples[i]));
    v.ratio = pairedRatio(samples[i], samples[0]);
  });
  return { batch, variants: variants.map((v) => Object.fromEntries(Object.entries(v).filter(([k]) => k !== 'module'))) };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (!tf.cuda.isAvailable()) throw new Error(`no CUDA device visible (libtorch ${tf.versions.libtorch}, CUDA build: ${tf.versions.cudaBuild})`);
  const loaded = await tf.load(o.model, { device: 'cuda' });
  const results = [];
  for (const b of o.batches) results.push(await benchBatch(loaded, b, o));
  const head = `ResNet-50 (scripted) on CUDA, libtorch ${tf.versions.libtorch}, ${o.iterations} rounds after ${o.warmup} warm-up, ` +
    'each call synchronised by copying its output to the CPU';
  const lines = [head, '', '| batch | variant | median ms | p10 | p90 | ratio to loaded | build ms | max abs err vs loaded fp32 | note |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---|'];
  for (const r of results) {
    for (const v of r.variants) {
      const f = (x, d = 2) => (x == null ? '—' : x.toFixed(d));
      lines.push(`| ${r.batch} | ${v.name} | ${f(v.medianMs)} | ${f(v.p10Ms)} | ${f(v.p90Ms)} | ${f(v.ratio)} | ${f(v.ms, 0)} | ` +
        `${v.maxAbsErr == null ? '—' : v.maxAbsErr.toExponential(2)} | ${v.error ?? v.detail ?? ''} |`);
    }
  }
  console.log(lines.join('\n'));
  if (o.json) fs.writeFileSync(o.json, JSON.stringify({ libtorch: tf.versions.libtorch, results }, null, 2));
}

main().catch((e) => { console.error(e); process.exit(1); });
