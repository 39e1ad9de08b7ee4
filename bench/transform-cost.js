#!/usr/bin/env node
'use strict';
// One transform in a fresh process, so the peak RSS it reports is its own (in a
// long-lived process the allocator hands back memory freed earlier, hiding the
// peak). Prints one line of JSON: { ms, peakExtraBytes, baseRssBytes }.
//   node bench/transform-cost.js MODEL.pt tf.fold|tf.tune|lt.FoldConvBN|lt.freeze|lt.freeze+ofi
const path = require('path');
const ROOT = path.resolve(__dirname, '..');
const tf = require(path.join(ROOT, 'dist'));
const internal = require(path.join(ROOT, 'dist', 'internal', 'bench'));

const MAKE = {
  'tf.fold': (m) => m.fuse().then((r) => r.module),
  'tf.tune': (m) => m.fuse({ mode: 'tune' }).then((r) => r.module),
  'lt.FoldConvBN': (m) => internal.peer(m, 'fold_conv_bn').then((r) => r.module),
  'lt.freeze': (m) => internal.peer(m, 'freeze').then((r) => r.module),
  'lt.freeze+ofi': (m) => internal.peer(m, 'freeze_optimize').then((r) => r.module),
};

async function main() {
  const [file, variant] = process.argv.slice(2);
  if (!file || !MAKE[variant]) {
    console.error(`usage: node bench/transform-cost.js MODEL.pt ${Object.keys(MAKE).join('|')}`);
    process.exit(2);
  }
  const m = await tf.load(file);
  if (global.gc) global.gc();
  const reset = internal.resetPeakRss();
  const base = internal.rss();
  const t0 = performance.now();
  const out = await MAKE[variant](m);
  const ms = performance.now() - t0;
  const after = internal.rss();
  console.log(JSON.stringify({ ms, peakExtraBytes: reset && base && after ? Math.max(0, after.peak - base.current) : null,
    baseRssBytes: base ? base.current : null }));
  await out.dispose();
  await m.dispose();
}

main().catch((e) => { console.error(e); process.exit(1); });
