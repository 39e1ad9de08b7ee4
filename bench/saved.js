#!/usr/bin/env node
'use strict';
/**
 * The user's path, end to end: `torchfold optimize --optimize` writes each model
 * (the CLI, in its own process), then a NEW Node process loads the saved files
 * (torchfold re-applies their recipes) and times them against onnxruntime-node
 * on the same inputs, in interleaved rounds; then PyTorch times the same saved
 * files in its own process. Target (issue 16): the saved-then-loaded module
 * ≤ 1.1× onnxruntime-node.
 *
 *   node bench/saved.js [--libtorch default|debian] [--models resnet50,mobilenet_v2,efficientnet_b0]
 *                       [--batches 1,8] [--iterations 20] [--warmup 5] [--threads 2] [--no-save]
 *
 * Every output is checked against PyTorch's float64 reference (bench/models); the
 * ONNX files and onnxruntime-node come from bench/ort.js, as in bench/run.js.
 */
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const MODELS = path.join(__dirname, 'models');
const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(name); return i < 0 ? dflt : argv[i + 1]; };
const BUILDS = { default: null, debian: 'build-debian' };
const build = opt('--libtorch', 'default');
if (!(build in BUILDS)) { console.error(`--libtorch takes ${Object.keys(BUILDS).join(', ')}`); process.exit(2); }
const env = { ...process.env };
if (BUILDS[build]) {
  env.TORCHFOLD_ADDON = path.join(ROOT, BUILDS[build], 'Release', 'torchfold.node');
  env.LIBTORCH = 'system';
}
Object.assign(process.env, env);
const o = {
  models: opt('--models', 'resnet50,mobilenet_v2,efficientnet_b0').split(','),
  batches: opt('--batches', '1,8').split(',').map(Number),
  iterations: Number(opt('--iterations', 20)), warmup: Number(opt('--warmup', 5)), threads: Number(opt('--threads', 2)),
};
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };

function readTensor(ref, rows = ref.shape[0]) {
  const buf = fs.readFileSync(path.join(MODELS, ref.file));
  const Ctor = { float32: Float32Array, float64: Float64Array }[ref.dtype];
  const all = new Ctor(buf.buffer, buf.byteOffset, buf.length / Ctor.BYTES_PER_ELEMENT);
  const per = all.length / ref.shape[0];
  return { data: all.slice(0, rows * per), shape: [rows, ...ref.shape.slice(1)] };
}
const maxAbs = (a, ref) => { let m = 0; for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - ref[i])); return m; };

/** Step 1: the CLI optimizes each model at each batch into .tmp/saved/. */
function optimizeWithCli(dir) {
  const out = [];
  for (const model of o.models) {
    for (const batch of o.batches) {
      const input = path.join(MODELS, `${model}_traced.pt`);
      const file = path.join(dir, `${model}_b${batch}.pt`);
      const t0 = performance.now();
      const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'cli', 'main.js'), 'optimize', input, '-o', file, '--optimize',
        '--input-shape', `${batch},3,224,224`, '--threads', String(o.threads), '--json'], { encoding: 'utf8', env });
      if (r.status !== 0) throw new Error(`torchfold optimize ${model} failed: ${(r.stderr || r.stdout).trim().split('\n').slice(-3).join(' ')}`);
      let chosen = null;
      try { chosen = JSON.parse(r.stdout).results?.[0]?.chosen ?? null; } catch { /* the text form: chosen is read from the file below */ }
      out.push({ model, batch, file, optimizeSeconds: (performance.now() - t0) / 1000, chosen });
    }
  }
  return out;
}

/** Step 2 (a new process): load the saved files, time them against onnxruntime-node. */
async function timeInNode(jobs) {
  const tf = require(path.join(ROOT, 'dist'));
  const { timeRounds, latencyStats } = require(path.join(ROOT, 'dist', 'fuse'));
  const ortBench = require('./ort');
  tf.setNumThreads(o.threads);
  const manifest = JSON.parse(fs.readFileSync(path.join(MODELS, 'manifest.json'), 'utf8'));
  const got = ortBench.ensureOrt();
  const onnx = got.reason ? null : ortBench.ensureOnnx(MODELS);
  const ortReason = got.reason ?? onnx?.reason;
  const rows = [];
  for (const j of jobs) {
    const entry = manifest.models[j.model];
    const x = readTensor(entry.input, j.batch);
    const ref = readTensor(entry.reference[String(j.batch)]).data;
    const t0 = performance.now();
    const m = await tf.load(j.file);
    const loadMs = performance.now() - t0;
    const input = tf.Tensor.from(x.data, x.shape);
    const runners = [async () => m.forward(input)];
    let ort = null;
    if (!ortReason) {
      const e = onnx.manifest.models[j.model];
      ort = await ortBench.openRunner(got.ort, path.join(onnx.dir, e.file), e, x.data, x.shape, o.threads);
      runners.push(ort.run);
    }
    const tfErr = maxAbs((await m.forward(input)).toValues(), ref);
    const ortErr = ort ? maxAbs((await ort.run()).data, ref) : null;
    const samples = await timeRounds(runners, [], o.iterations, o.warmup);
    const tfMs = latencyStats(samples[0]).medianMs, ortMs = ort ? latencyStats(samples[1]).medianMs : null;
    const paired = ort ? median(samples[0].map((s, i) => s / samples[1][i])) : null;
    rows.push({ ...j, loadMs, recipe: m.recipe ?? null, tfMs, tfMaxAbsError: tfErr, ortMs, ortMaxAbsError: ortErr, ratioToOrt: paired,
      ort: ort ? `onnxruntime-node ${got.version}` : `skipped: ${ortReason}` });
    ort?.dispose();
    await m.dispose();
  }
  return { libtorch: tf.versions.libtorch, threads: tf.getNumThreads(), computeThreads: tf.getComputeThreads(), rows };
}

/** Step 3: PyTorch times the same saved files in its own process (bench/pytorch_time.py). */
function timeInPyTorch(jobs) {
  const manifest = JSON.parse(fs.readFileSync(path.join(MODELS, 'manifest.json'), 'utf8'));
  const py = build === 'debian' ? { python: '/usr/bin/python3', env: {} } : { python: 'python3', env: { PYTHONPATH: path.join(ROOT, '.libtorch', 'cuda') } };
  for (const j of jobs) {
    const entry = manifest.models[j.model];
    const jobFile = path.join(os.tmpdir(), `torchfold-saved-${process.pid}.json`);
    const ref = entry.reference[String(j.batch)];
    fs.writeFileSync(jobFile, JSON.stringify({ file: j.file, batch: j.batch, threads: o.threads, iterations: o.iterations, warmup: o.warmup,
      variants: ['loaded'], input: { file: path.join(MODELS, entry.input.file), shape: entry.input.shape },
      reference: { file: path.join(MODELS, ref.file), shape: ref.shape } }));
    const r = spawnSync(py.python, [path.join(__dirname, 'pytorch_time.py'), jobFile], { encoding: 'utf8', env: { ...process.env, ...py.env } });
    fs.rmSync(jobFile, { force: true });
    try {
      const out = JSON.parse(r.stdout.trim().split('\n').pop());
      const row = out.rows[0];
      j.pytorch = row.error ? { error: row.error } : { torch: out.torch, medianMs: median(row.samples), maxAbsError: row.max_abs_error };
    } catch {
      j.pytorch = { error: (r.stderr || '').trim().split('\n').pop() || `exit ${r.status}` };
    }
  }
}

async function main() {
  if (argv.includes('--child')) {
    const jobs = JSON.parse(fs.readFileSync(argv[argv.indexOf('--child') + 1], 'utf8'));
    console.log(JSON.stringify(await timeInNode(jobs)));
    return;
  }
  const dir = path.join(ROOT, '.tmp', 'saved');
  fs.mkdirSync(dir, { recursive: true });
  console.log(`bench/saved.js: optimizing ${o.models.join(', ')} at batch ${o.batches.join(', ')} with the CLI ...`);
  const jobs = optimizeWithCli(dir);
  const jobsFile = path.join(dir, 'jobs.json');
  fs.writeFileSync(jobsFile, JSON.stringify(jobs));
  const child = spawnSync(process.execPath, [__filename, ...argv, '--child', jobsFile], { encoding: 'utf8', env, maxBuffer: 1 << 26 });
  if (child.status !== 0) throw new Error(`the timing process failed: ${child.stderr}`);
  const timed = JSON.parse(child.stdout.trim().split('\n').pop());
  timeInPyTorch(timed.rows);
  console.log(`\n### Saved by \`torchfold optimize --optimize\`, loaded in a new process (libtorch ${timed.libtorch}, ${timed.threads} threads, ` +
    `${timed.computeThreads} compute thread(s))\n`);
  console.log('| model | batch | kept | load ms (recipe ms) | torchfold ms | onnxruntime-node ms | torchfold / ort (paired) | PyTorch, same file, own process ms | max abs err tf / ort |');
  console.log('|---|---:|---|---:|---:|---:|---:|---:|---|');
  for (const r of timed.rows) {
    const kept = r.recipe ? `${r.recipe.candidate}${r.recipe.applied ? '' : ` (portable: ${r.recipe.reason})`}` : (r.chosen ?? 'portable');
    console.log(`| ${r.model} | ${r.batch} | ${kept} | ${r.loadMs.toFixed(0)} (${r.recipe ? r.recipe.applyMs.toFixed(0) : '-'}) | ${r.tfMs.toFixed(2)} | ` +
      `${r.ortMs?.toFixed(2) ?? r.ort} | ${r.ratioToOrt?.toFixed(2) ?? '-'} | ${r.pytorch.medianMs?.toFixed(2) ?? r.pytorch.error} | ` +
      `${r.tfMaxAbsError.toExponential(1)} / ${r.ortMaxAbsError?.toExponential(1) ?? '-'} |`);
  }
  const checks = timed.rows.filter((r) => r.ratioToOrt !== null)
    .map((r) => ({ target: 'saved+loaded ≤ 1.1× onnxruntime-node', at: `${r.model} b${r.batch}`, value: r.ratioToOrt, pass: r.ratioToOrt <= 1.1 }));
  console.log('\n| target | at | ratio | met |\n|---|---|---:|---|');
  for (const c of checks) console.log(`| ${c.target} | ${c.at} | ${c.value.toFixed(2)} | ${c.pass ? 'yes' : '**no**'} |`);
  if (!argv.includes('--no-save')) {
    const file = path.join(__dirname, 'results', `${new Date().toISOString().replace(/[:.]/g, '-')}-saved-${build}.json`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify({ ...timed, options: o, checks }, null, 2));
    console.log(`\nwritten ${path.relative(ROOT, file)}`);
  }
}

main().catch((e) => { console.error(e.stack || e); process.exit(1); });
