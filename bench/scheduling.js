#!/usr/bin/env node
'use strict';
/**
 * Scheduling cost: a forward called from Node against the same libtorch call
 * timed in a C++ loop on the compute thread, a thread that runs nothing else
 * meanwhile (no JS, no queue, no hand-back; a second thread would bring a
 * second OpenMP team, whose spinning workers disturb both), on
 * ResNet-50 and a tiny model at batch 1, one call at a time and 8 at once.
 * Blocks of calls alternate between the two so drift hits both alike; the
 * ratios are paired per round, medians over rounds. Target: within 3% (issue 16).
 *
 *   node bench/scheduling.js [--libtorch default|debian|cuda] [--rounds N] [--compute-threads N]
 *
 * Also times 8 concurrent calls with 4 compute threads, which is how calls ran
 * before torchfold owned its threads (libuv's default pool of 4, one OpenMP
 * team each): the cost of teams fighting over the cores.
 */
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const BUILDS = { default: null, debian: 'build-debian', cuda: 'build-cuda' };
const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(name); return i < 0 ? dflt : argv[i + 1]; };
const build = opt('--libtorch', 'default');
if (!(build in BUILDS)) { console.error(`--libtorch takes ${Object.keys(BUILDS).join(', ')}`); process.exit(2); }
if (BUILDS[build]) {
  const addon = path.join(ROOT, BUILDS[build], 'Release', 'torchfold.node');
  process.env.TORCHFOLD_ADDON = addon;
  process.env.LIBTORCH = build === 'debian' ? 'system' : JSON.parse(fs.readFileSync(`${addon}.json`, 'utf8')).libtorch.root;
}
const tf = require(path.join(ROOT, 'dist'));
const internal = require(path.join(ROOT, 'dist', 'internal', 'bench'));

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function sequential(m, x, n) {
  const t0 = now();
  for (let i = 0; i < n; i++) await m.forward(x);
  return (now() - t0) / n;
}

async function concurrent(m, x, n, width) {
  const t0 = now();
  for (let done = 0; done < n; done += width) await Promise.all(Array.from({ length: width }, () => m.forward(x)));
  return (now() - t0) / n;
}

// One round: a block of `calls` Node forwards one at a time, the same number
// in C++ on the reference thread, and 8-at-once Node calls; the order rotates
// each round. Ratios are paired per round (this VM drifts by ±20% over
// seconds), then the median over rounds is taken.
async function measure(file, shape, calls, rounds) {
  const m = await tf.load(file);
  const x = randn(shape);
  await sequential(m, x, Math.max(3, calls));
  await internal.timeForwardNative(m, [x], 1, calls);
  await concurrent(m, x, 8, 8);
  const wide = Math.max(8, calls - (calls % 8));
  const rows = { cpp: [], node: [], node8: [] };
  const steps = [
    async () => rows.cpp.push(mean(await internal.timeForwardNative(m, [x], calls, 0))),
    async () => rows.node.push(await sequential(m, x, calls)),
    async () => rows.node8.push(await concurrent(m, x, wide, 8)),
  ];
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < steps.length; i++) await steps[(i + r) % steps.length]();
  }
  // How calls ran before (libuv's pool: 4 threads, one OpenMP team each), 8 at once.
  const before = tf.getComputeThreads();
  tf.setComputeThreads(4);
  const fighting = [];
  await concurrent(m, x, 8, 8);
  for (let r = 0; r < Math.max(3, Math.ceil(rounds / 2)); r++) fighting.push(await concurrent(m, x, wide, 8));
  tf.setComputeThreads(before);
  await m.dispose();
  const paired = (a, b) => median(a.map((v, i) => v / b[i]));
  return { model: path.basename(file), shape, calls, rounds, cppMs: median(rows.cpp), nodeMs: median(rows.node), node8Ms: median(rows.node8),
    fourTeams8Ms: median(fighting), ratio: paired(rows.node, rows.cpp), ratio8: paired(rows.node8, rows.cpp),
    ratioFourTeams: median(fighting) / median(rows.cpp), overheadUs: (median(rows.node) - median(rows.cpp)) * 1000 };
}

function randn(shape) {
  let s = 1;
  const n = shape.reduce((a, b) => a * b, 1), data = new Float32Array(n);
  for (let i = 0; i < n; i++) { s = (s * 16807) % 2147483647; data[i] = s / 2147483647 - 0.5; }
  return tf.Tensor.from(data, shape);
}

(async () => {
  if (opt('--compute-threads')) tf.setComputeThreads(Number(opt('--compute-threads')));
  const rounds = Number(opt('--rounds', 15));
  const models = path.join(__dirname, 'models');
  const cases = [[path.join(models, 'resnet50_scripted.pt'), [1, 3, 224, 224], 4], [path.join(models, 'tiny_traced.pt'), [1, 3, 8, 8], 200]];
  const results = [];
  for (const [file, shape, calls] of cases) {
    if (!fs.existsSync(file)) { console.log(`skipped ${file}: missing (node scripts/make-fixtures.js makes the bench models)`); continue; }
    results.push(await measure(file, shape, calls, rounds));
  }
  const env = { libtorch: tf.versions.libtorch, threads: tf.getNumThreads(), computeThreads: tf.getComputeThreads(),
    uvThreadpool: process.env.UV_THREADPOOL_SIZE ?? 'default (4)' };
  console.log(`### Scheduling: forward from Node against a C++ loop on the compute thread (libtorch ${env.libtorch}, ${env.threads} intra-op threads, ` +
    `${env.computeThreads} compute thread(s), UV_THREADPOOL_SIZE ${env.uvThreadpool})\n`);
  console.log('ms per call, medians; in brackets the paired ratio to the C++ loop.\n');
  console.log('| model | input | C++ loop on the compute thread | Node, 1 at a time | Node, 8 at once | 8 at once on 4 teams (old scheduling; ratio of medians) |\n|---|---|---:|---:|---:|---:|');
  for (const r of results) {
    console.log(`| ${r.model} | ${r.shape.join('×')} | ${r.cppMs.toFixed(3)} | ${r.nodeMs.toFixed(3)} (${r.ratio.toFixed(3)}×, +${r.overheadUs.toFixed(0)} µs) | ` +
      `${r.node8Ms.toFixed(3)} (${r.ratio8.toFixed(3)}×) | ${r.fourTeams8Ms.toFixed(3)} (${r.ratioFourTeams.toFixed(3)}×) |`);
  }
  const checks = results.flatMap((r) => [
    { target: 'Node forward within 3% of the C++ loop', at: `${r.model}, 1 at a time`, value: r.ratio, pass: r.ratio <= 1.03 },
    { target: 'Node forward within 3% of the C++ loop', at: `${r.model}, 8 at once`, value: r.ratio8, pass: r.ratio8 <= 1.03 },
  ]);
  console.log('\n| target | at | ratio | met |\n|---|---|---:|---|');
  for (const c of checks) console.log(`| ${c.target} | ${c.at} | ${c.value.toFixed(3)} | ${c.pass ? 'yes' : '**no**'} |`);
  if (!argv.includes('--no-save')) {
    const out = path.join(__dirname, 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}-scheduling.json`);
    fs.mkdirSync(path.dirname(out), { recursive: true });
    fs.writeFileSync(out, JSON.stringify({ env, results, checks }, null, 2));
    console.log(`\nwritten ${path.relative(ROOT, out)}`);
  }
})().catch((e) => { console.error(e); process.exit(1); });
