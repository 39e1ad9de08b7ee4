#!/usr/bin/env node
'use strict';
// Condenses a bench/results JSON into the tables the README quotes (markdown on stdout):
//   node bench/summarize.js bench/results/<run>.json
const r = require(process.argv[2]);
const f = (v, d = 2) => (v == null ? '—' : v.toFixed(d));
const ms = (v) => (v == null ? '—' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
console.log('| model | batch | loaded ms | tf.fold | lt.FoldConvBN | lt.freeze | tf.optimize (kept) | tf.optimize saved (kept) | lt.freeze+ofi |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const x of r.results) {
  if (x.form !== 'traced') continue;
  const row = (v) => x.rows.find((y) => y.variant === v);
  const o = row('tf.optimize'), oa = row('tf.optimize saved');
  console.log(`| ${x.model} | ${x.batch} | ${ms(row('loaded').medianMs)} | ${f(row('tf.fold').ratio)} | ${f(row('lt.FoldConvBN').ratio)} | ${f(row('lt.freeze').ratio)} | ${f(o.ratio)} (${o.detail}) | ${f(oa.ratio)} (${oa.detail}) | ${f(row('lt.freeze+ofi').ratio)} |`);
}
console.log('\n| model (traced) | tf.fold ms | peak extra | lt.FoldConvBN ms | peak extra | lt.freeze ms | peak extra |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
const seen = new Set();
for (const x of r.results) {
  if (x.form !== 'traced' || seen.has(x.model)) continue;
  seen.add(x.model);
  const row = (v) => x.rows.find((y) => y.variant === v);
  const c = (v) => `${ms(row(v).transformMs)} | ${f(row(v).peakExtraOfWeights)}×`;
  console.log(`| ${x.model} | ${c('tf.fold')} | ${c('lt.FoldConvBN')} | ${c('lt.freeze')} |`);
}
const peers = r.results.filter((x) => x.rows.some((y) => y.variant === 'ort' || y.variant === 'pytorch'));
if (peers.length) {
  console.log('\n| model | batch | loaded ms | tf.optimize | tf.optimize saved | ort (in rounds) | ort alone | pytorch (own process) | pytorch frozen+llga | pytorch frozen+ofi |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const x of peers) {
    if (x.form !== 'traced') continue;
    const m = (v) => ms(x.rows.find((y) => y.variant === v)?.medianMs);
    console.log(`| ${x.model} | ${x.batch} | ${m('loaded')} | ${m('tf.optimize')} | ${m('tf.optimize saved')} | ${m('ort')} | ${m('ort alone')} | ${m('pytorch')} | ${m('pytorch frozen+llga')} | ${m('pytorch frozen+ofi')} |`);
  }
}
const miss = r.targets.filter((t) => !t.pass);
console.log(`\ntargets: ${r.targets.length - miss.length} pass, ${miss.length} miss`);
const byTarget = {};
for (const t of r.targets) { byTarget[t.target] ??= { pass: 0, miss: 0, worst: null }; byTarget[t.target][t.pass ? 'pass' : 'miss']++; if (!t.pass && (byTarget[t.target].worst == null || t.value > byTarget[t.target].worst.value)) byTarget[t.target].worst = t; }
for (const [k, v] of Object.entries(byTarget)) console.log(`- ${k}: ${v.pass} pass, ${v.miss} miss${v.worst ? ` (worst ${v.worst.at}: ${v.worst.value.toFixed(3)})` : ''}`);
