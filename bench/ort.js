#!/usr/bin/env node
'use strict';
/**
 * onnxruntime-node for the bench's `ort` row, and the ONNX files it runs.
 *
 *   node bench/ort.js [--threads N]    install, export, then check every exported model at
 *                                      batch 1 and 8 against PyTorch's float64 reference
 *
 * onnxruntime-node is a bench-only dependency, never torchfold's: its install script
 * downloads extra files and fails offline, so it must not be in the root package.json.
 * bench/ort/package.json and its package-lock.json pin it; ensureOrt() installs it on
 * demand into bench/ort/node_modules (git-ignored) with `npm ci --ignore-scripts`, which
 * keeps the CPU binaries the package ships.
 *
 * ensureOnnx() installs onnx and onnxscript with pip into .libtorch/onnx (git-ignored; made
 * whole in .libtorch/onnx.partial, then renamed, as scripts/setup.sh does for torch), then
 * runs scripts/make_bench_onnx.py with PyTorch 2.14.1 from .libtorch/cuda
 * (scripts/setup.sh --all) into bench/models/onnx/. Both are idempotent: a few
 * milliseconds when everything is in place.
 *
 * Neither ever throws: they return { reason } and the bench prints it and skips the row.
 */
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const ORT_DIR = path.join(__dirname, 'ort');
const ORT_PACKAGE = path.join(ORT_DIR, 'node_modules', 'onnxruntime-node');
const ONNX_PY = path.join(ROOT, '.libtorch', 'onnx');
const TORCH2_PY = path.join(ROOT, '.libtorch', 'cuda');
// Wheels from this machine's configured pip indexes (pip config list); --no-deps, as torch's
// own dependencies (numpy, typing-extensions) come from .libtorch/cuda.
const ONNX_WHEELS = ['onnx==1.23.1', 'onnxscript==0.7.2', 'onnx-ir==1.0.0', 'ml-dtypes', 'protobuf', 'packaging'];

const lastLine = (s) => (s || '').trim().split('\n').filter(Boolean).pop() ?? '';

/** { ort, version } or { reason }: onnxruntime-node from bench/ort, installed first when missing or stale. */
function ensureOrt({ install = true } = {}) {
  const lock = path.join(ORT_DIR, 'package-lock.json');
  const stamp = path.join(ORT_DIR, 'node_modules', '.package-lock.json');
  const fresh = fs.existsSync(path.join(ORT_PACKAGE, 'package.json')) && fs.existsSync(stamp) &&
    fs.statSync(stamp).mtimeMs >= fs.statSync(lock).mtimeMs;
  if (!fresh) {
    if (!install) return { reason: 'onnxruntime-node is not installed in bench/ort (run node bench/ort.js)' };
    console.log('bench: installing onnxruntime-node into bench/ort/node_modules (npm ci --ignore-scripts)');
    const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
    const r = spawnSync(npm, ['ci', '--ignore-scripts', '--no-audit', '--no-fund', '--loglevel=error'],
      { cwd: ORT_DIR, encoding: 'utf8', stdio: ['ignore', 'inherit', 'pipe'] });
    if (r.status !== 0) {
      const said = (r.stderr || '').split('\n').filter((l) => l.trim() && !/complete log of this run/.test(l));
      return { reason: `npm ci in bench/ort failed (${r.error?.code ?? `exit ${r.status}`}): ${said.slice(0, 2).join(' ').trim() || 'no output'}` };
    }
  }
  try {
    const ort = require(ORT_PACKAGE);
    return { ort, version: ort.env?.versions?.node ?? require(path.join(ORT_PACKAGE, 'package.json')).version };
  } catch (e) {
    return { reason: `onnxruntime-node does not load: ${e.message.split('\n')[0]}` };
  }
}

function hasWheel(dir, name, version) {
  try {
    return fs.readdirSync(dir).some((f) => f.startsWith(`${name}-${version ?? ''}`) && f.endsWith('.dist-info'));
  } catch {
    return false;
  }
}

/** pip-installs ONNX_WHEELS into .libtorch/onnx, atomically. null, or the reason it could not. */
function installOnnxTools(python) {
  const want = ONNX_WHEELS.filter((w) => w.includes('==')).map((w) => w.split('=='));
  if (want.every(([n, v]) => hasWheel(ONNX_PY, n.replace(/-/g, '_'), v))) return null;
  console.log(`bench: installing ${ONNX_WHEELS.join(' ')} into .libtorch/onnx (pip)`);
  const partial = `${ONNX_PY}.partial`;
  fs.rmSync(partial, { recursive: true, force: true });
  const r = spawnSync(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--root-user-action=ignore',
    '--retries', '0', '--timeout', '2', '--no-deps', '--target', partial, ...ONNX_WHEELS], { encoding: 'utf8' });
  if (r.status !== 0) {
    fs.rmSync(partial, { recursive: true, force: true });
    const err = (r.stderr || '').split('\n').filter((l) => l && !/is ignored: it is neither a file nor a directory/.test(l));
    return `pip could not install ${ONNX_WHEELS.join(' ')}: ${err.pop() ?? r.error?.code ?? `exit ${r.status}`} (pip needs an index that has them: pip config list)`;
  }
  fs.rmSync(ONNX_PY, { recursive: true, force: true });
  fs.renameSync(partial, ONNX_PY);
  return null;
}

/**
 * { dir, manifest } or { reason }: the bench models exported to ONNX in MODELS_DIR/onnx
 * (made or brought up to date first). manifest.models[name] is { file, ... } or { error }.
 */
function ensureOnnx(modelsDir) {
  const python = process.env.TORCHFOLD_ONNX_PYTHON || 'python3';
  if (!fs.existsSync(path.join(TORCH2_PY, 'torch', '__init__.py'))) {
    return { reason: 'exporting ONNX needs PyTorch 2.x in .libtorch/cuda: run bash scripts/setup.sh --all' };
  }
  const failed = installOnnxTools(python);
  if (failed) return { reason: failed };
  const r = spawnSync(python, [path.join(ROOT, 'scripts', 'make_bench_onnx.py'), modelsDir], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PYTHONPATH: [TORCH2_PY, ONNX_PY].join(path.delimiter), PYTHONWARNINGS: 'ignore' },
  });
  if (r.stdout) process.stdout.write(r.stdout);
  if (r.status !== 0) return { reason: `scripts/make_bench_onnx.py failed: ${lastLine(r.stderr) || r.error?.code || `exit ${r.status}`}` };
  const dir = path.join(modelsDir, 'onnx');
  return { dir, manifest: JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) };
}

/**
 * CPU execution provider, `threads` intra-op threads, 1 inter-op thread, all graph
 * optimizations, sequential; and, unless `spin`, no spinning: by default onnxruntime's pool
 * threads spin on after each run, and in the bench's interleaved rounds the libtorch call
 * that came next measured 2× slower for it (ResNet-18 and MobileNetV2 at batch 1, 2 threads
 * on 2 cores). Alone, onnxruntime may be a little faster with its default (spin: true).
 */
function sessionOptions(threads, { spin = false } = {}) {
  return { executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    graphOptimizationLevel: 'all', executionMode: 'sequential', ...(spin ? {} : { extra: { session: { intra_op: { allow_spinning: '0' } } } }) };
}

/**
 * A session for one exported model, and a runner over a fixed float32 input for the
 * library's timeRounds: run() resolves to the output tensor (an ort.Tensor, data on the CPU).
 * onnxruntime-node's run() is a promise around a synchronous call on the main thread.
 */
async function openRunner(ort, file, entry, data, shape, threads, options = {}) {
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(file, sessionOptions(threads, options));
  const createMs = performance.now() - t0;
  const feeds = { [entry.input_name]: new ort.Tensor('float32', data, shape) };
  const run = async () => (await session.run(feeds))[entry.output_name];
  return { session, run, createMs, dispose: () => session.release() };
}

/** Largest |a[i] - ref[i]| over ref's elements. */
function maxAbs(a, ref) {
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(Number(a[i]) - ref[i]));
  return m;
}

/** node bench/ort.js: install, export, check every exported model at batch 1 and 8. Exit 1 on a miss. */
async function main(argv) {
  const at = argv.indexOf('--threads');
  const threads = at >= 0 ? Number(argv[at + 1]) : 2;
  const modelsDir = path.join(__dirname, 'models');
  const python = process.env.TORCHFOLD_PYTHON || '/usr/bin/python3';
  const made = spawnSync(python, [path.join(ROOT, 'scripts', 'make_bench_models.py'), modelsDir], { stdio: 'inherit' });
  if (made.status !== 0) { console.error('bench/ort: could not make the benchmark models'); process.exit(1); }
  const o = ensureOrt();
  if (o.reason) { console.error(`bench/ort: ${o.reason}`); process.exit(1); }
  const x = ensureOnnx(modelsDir);
  if (x.reason) { console.error(`bench/ort: ${x.reason}`); process.exit(1); }
  const models = JSON.parse(fs.readFileSync(path.join(modelsDir, 'manifest.json'), 'utf8')).models;
  const read = (spec, Ctor, rows) => {
    const buf = fs.readFileSync(path.join(modelsDir, spec.file));
    const all = new Ctor(buf.buffer, buf.byteOffset, buf.length / Ctor.BYTES_PER_ELEMENT);
    const per = all.length / spec.shape[0];
    return { data: all.slice(0, rows * per), shape: [rows, ...spec.shape.slice(1)] };
  };
  console.log(`\nonnxruntime-node ${o.version}, ${threads} intra-op threads; ONNX by PyTorch ${x.manifest.torch}, opset ${x.manifest.opset}\n`);
  console.log('| model | batch | max abs err vs f64 | the model\'s own float32 error | ratio | |\n|---|---:|---:|---:|---:|---|');
  let bad = 0;
  for (const [name, e] of Object.entries(x.manifest.models)) {
    if (!e.file) { console.log(`| ${name} | | export failed: ${e.error} | | | |`); bad++; continue; }
    for (const batch of models[name].batches) {
      const input = read(models[name].input, Float32Array, batch);
      const ref = read(models[name].reference[String(batch)], Float64Array, batch);
      const r = await openRunner(o.ort, path.join(x.dir, e.file), e, input.data, input.shape, threads);
      const out = await r.run();
      const okShape = out.dims.join() === ref.shape.join();
      const err = maxAbs(out.data, ref.data);
      const own = models[name].float32_error[String(batch)];
      // A float32 model run by another runtime: a few times the model's own float32 error
      // (another summation order) is expected; 10× or 1e-4 absolute, whichever is larger, is the bound.
      const pass = okShape && err <= Math.max(10 * own, 1e-4);
      if (!pass) bad++;
      console.log(`| ${name} | ${batch} | ${err.toExponential(2)}${okShape ? '' : ` (shape ${out.dims.join('×')})`} | ${own.toExponential(2)} | ` +
        `${(err / own).toFixed(1)} | ${pass ? 'ok' : '**miss**'} |`);
      await r.dispose();
    }
  }
  if (bad) { console.error(`\nbench/ort: ${bad} check(s) missed`); process.exit(1); }
  console.log('\nbench/ort: every exported model matches the float64 reference at batch 1 and 8');
}

module.exports = { ensureOrt, ensureOnnx, openRunner, sessionOptions, maxAbs };

if (require.main === module) main(process.argv.slice(2)).catch((e) => { console.error(e); process.exit(1); });
