#!/usr/bin/env node
'use strict';
// Benchmarks issue 4's transforms against their peers, as ratios within one
// run (these machines are noisy, so absolute numbers only mean something
// side by side):
//  1. tune mode against fold mode and the unfused module: eval-mode forward
//     latency (interleaved, in Node), then activation memory and
//     forward+backward time in training-style use (eval-mode BatchNorm,
//     parameters requiring grad) measured in PyTorch by bench/tune_memory.py;
//  2. optimize: every candidate (input, fused, frozen, and libtorch's own
//     freeze + optimize_for_inference) timed side by side on several models,
//     with the one torchfold keeps.
// Needs the built addon (npm run build:ts and a native build) and the test
// fixtures (node scripts/make-fixtures.js).
// Usage: node bench/transforms.js [--iterations N] [--quick]
// Writes bench/results/transforms.json.
const { execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const tf = require('../dist');
const { benchmarkMany, materialize } = require('../dist/fuse');

const ROOT = path.join(__dirname, '..');
const FIX = path.join(ROOT, 'test', 'fixtures');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const itAt = args.indexOf('--iterations');
const iterations = itAt >= 0 ? Number(args[itAt + 1]) : quick ? 5 : 20;

function row(cells) { return cells.map((c, i) => String(c).padEnd(i === 0 ? 28 : 14)).join(''); }
const ms = (x) => (x === undefined ? '-' : x.medianMs.toFixed(2));

async function tuneSection(results) {
  const manifest = JSON.parse(fs.readFileSync(path.join(FIX, 'tune', 'manifest.json'), 'utf8'));
  const c = manifest.cases.tv_resnet10_scripted;
  const file = path.join(FIX, 'tune', c.file);
  const m = await tf.load(file);
  const fold = (await m.fuse()).module;
  const { module: tune, report } = await m.fuse({ mode: 'tune' });
  const shape = c.input_shapes[0];
  const inputs = materialize([shape]);
  const [u, f, t] = await benchmarkMany([m, fold, tune].map((x) => (xs) => x.forward(...xs)), inputs, iterations, 3);
  console.log(`\n1. tune mode, ${c.note} (${report.folded}/${report.pairs.length} pairs), eval forward on [${shape}], ${iterations} rounds`);
  console.log(row(['module', 'median ms', 'p10', 'p90', 'vs unfused']));
  for (const [name, s] of [['unfused', u], ['fold', f], ['tune', t]]) {
    console.log(row([name, s.medianMs.toFixed(2), s.p10Ms.toFixed(2), s.p90Ms.toFixed(2), (u.medianMs / s.medianMs).toFixed(3) + 'x']));
  }
  const tmp = fs.mkdtempSync(path.join(ROOT, '.tmp-bench-'));
  const [tunedFile, foldedFile] = [path.join(tmp, 'tuned.pt'), path.join(tmp, 'folded.pt')];
  await tune.save(tunedFile);
  await fold.save(foldedFile);
  const trainShape = quick ? [2, ...shape.slice(1)] : [8, ...shape.slice(1)];
  let memory = null;
  try {
    const out = execFileSync('/usr/bin/python3', [path.join(__dirname, 'tune_memory.py'), file, tunedFile, '--fold', foldedFile,
      '--input', trainShape.join(','), '--iters', String(quick ? 2 : 5)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    memory = JSON.parse(out.trim().split('\n').pop());
  } catch (e) {
    console.log(`   (training-style memory not measured: ${e.message.split('\n')[0]})`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  results.tune = { model: c.note, shape, eval: { unfused: u, fold: f, tune: t }, trainingStyle: memory };
}

async function optimizeSection(results) {
  const transform = JSON.parse(fs.readFileSync(path.join(FIX, 'transform', 'manifest.json'), 'utf8')).optimize;
  const demo = JSON.parse(fs.readFileSync(path.join(ROOT, 'models', 'demo.json'), 'utf8'));
  const models = [
    ['demo (TinyResNet)', path.join(ROOT, 'models', 'demo.pt'), demo.input.shape],
    ['reused conv output', path.join(FIX, 'transform', transform.reused_conv.file), transform.reused_conv.input_shapes[0]],
    ['exported method + BN', path.join(FIX, 'transform', transform.exported_bn.file), transform.exported_bn.input_shapes[0]],
    ['resnet18', path.join(FIX, 'transform', transform.resnet18.file), transform.resnet18.input_shapes[0]],
    ['efficientnet_b0 (traced)', path.join(FIX, 'fuse', 'tv_efficientnet_b0_traced.pt'), [8, 3, 64, 64]],
  ];
  results.optimize = [];
  console.log(`\n2. optimize: candidates side by side (median ms; speedup vs the input module), ${iterations} rounds, ` +
    `${tf.getNumThreads()} thread(s)`);
  console.log(row(['model [input]', 'input', 'fused', 'frozen', 'freeze+ofi', 'kept']));
  for (const [name, file, shape] of models) {
    if (!fs.existsSync(file)) { console.log(row([name, 'missing fixture'])); continue; }
    const m = await tf.load(file);
    const { report } = await m.fuse({ optimize: { inputs: [shape], iterations, warmup: 2, requireSaveable: true } });
    const o = report.optimize;
    const by = Object.fromEntries(o.candidates.map((k) => [k.name, k]));
    const cell = (k) => (k && k.latency ? `${ms(k.latency)} ${k.speedup.toFixed(2)}x${k.eligible ? '' : '*'}` : '-');
    console.log(row([`${name} [${shape}]`, ms(by.input.latency), cell(by.fused), cell(by.frozen), cell(by['frozen+optimized']), o.chosen]));
    results.optimize.push({ model: name, shape, chosen: o.chosen, candidates: o.candidates });
  }
  console.log('   * not eligible (see the report: e.g. optimize_for_inference\'s result cannot be saved in this libtorch)');
}

async function main() {
  const results = { libtorch: tf.versions.libtorch, threads: tf.getNumThreads(), iterations, date: new Date().toISOString() };
  await tuneSection(results);
  await optimizeSection(results);
  fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
  fs.writeFileSync(path.join(__dirname, 'results', 'transforms.json'), JSON.stringify(results, null, 2));
}

main().catch((e) => { console.error(e); process.exit(1); });
