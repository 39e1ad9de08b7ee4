'use strict';
// Bad and damaged model files: the stress scenario, and the runner the tests use.
//
// tryFiles() opens every file in a child process that has no protection
// (corpus-child.js), restarting a new child after the file that killed the last
// one, so one run tells, per file: the error code, or that it loaded and what
// forward / fuse / save then did, or the step at which the process died.
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ROOT, row } = require('./common');

const PYTHON = process.env.TORCHFOLD_PYTHON || '/usr/bin/python3';
const LOAD_CODES = new Set(['ERR_NOT_TORCHSCRIPT', 'ERR_FILE_CORRUPT', 'ERR_UNSUPPORTED', 'ERR_NOT_A_FILE',
  'ERR_FILE_NOT_FOUND', 'ERR_FILE_UNREADABLE']);

function runChild(dist, files, options, scratch) {
  const list = path.join(scratch, `list-${process.pid}-${Date.now()}.json`);
  fs.writeFileSync(list, JSON.stringify({ dist, files, input: options.input, verify: options.verify, scratch }));
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(__dirname, 'corpus-child.js'), list], {
      stdio: ['ignore', 'pipe', 'pipe'], env: process.env,
    });
    const results = new Map();
    let last = null;
    let buffer = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d) => {
      buffer += d;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        let msg;
        try { msg = JSON.parse(line); } catch { continue; }
        if (msg.result) { results.set(msg.file, msg.result); last = null; } else if (msg.stage) last = msg;
      }
    });
    child.stderr.setEncoding('utf8').on('data', (d) => { stderr = (stderr + d).slice(-2000); });
    child.on('close', (code, signal) => { fs.rmSync(list, { force: true }); resolve({ results, last, code, signal, stderr }); });
  });
}

/**
 * Opens each file as a user would, without isolation, in throwaway child
 * processes. Resolves to { results: Map(file -> outcome), crashes: [{ file, stage, signal, code }] }.
 * options: { dist, input: shape for forward (default [1,3,8,8]), verify }
 */
async function tryFiles(files, options = {}) {
  const dist = options.dist || path.join(ROOT, 'dist');
  const opts = { input: options.input || [1, 3, 8, 8], verify: !!options.verify };
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-corpus-'));
  const results = new Map();
  const crashes = [];
  let rest = files.slice();
  try {
    while (rest.length > 0) {
      const r = await runChild(dist, rest, opts, scratch);
      for (const [f, v] of r.results) results.set(f, v);
      if (r.last) {
        crashes.push({ file: r.last.file, stage: r.last.stage, signal: r.signal, code: r.code, stderr: r.stderr });
        results.set(r.last.file, { crashed: r.last.stage, signal: r.signal });
        rest = rest.slice(rest.indexOf(r.last.file) + 1);
      } else if (r.code !== 0) {
        throw new Error(`corpus child failed outside any file (code ${r.code}, ${r.signal}): ${r.stderr}`);
      } else {
        rest = [];
      }
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
  return { results, crashes };
}

/** Every file of a corpus folder made by scripts/make_bad_corpus.py (base/ and mutants/), sorted. */
function corpusFiles(dir) {
  const out = [];
  for (const sub of ['base', 'mutants']) {
    const d = path.join(dir, sub);
    if (fs.existsSync(d)) for (const f of fs.readdirSync(d).sort()) out.push(path.join(d, f));
  }
  out.push(path.join(dir, 'base', 'does-not-exist.pt'));
  return out;
}

/** Every file below a user's folder of bad files (any names), sorted. */
function filesBelow(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = path.join(d, e.name);
      if (e.isDirectory() && !/\.(pt|pth|ptl)$/.test(e.name)) walk(p); else out.push(p);
    }
  };
  walk(dir);
  return out;
}

/**
 * PyTorch's own outputs for the same input on each file (only files torchfold
 * loaded: PyTorch has no size check and may crash on the others). file -> number[] | { error }.
 */
function torchOutputs(files, input) {
  const script = `
import json, math, sys, torch
files, shape = json.load(sys.stdin)
def plain(v):  # as JavaScript's String(v) for the values JSON cannot hold
    return v if math.isfinite(v) else ("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))
n = 1
for d in shape: n *= d
x = torch.tensor([(((i * 37) % 17) - 8) / 8 for i in range(n)], dtype=torch.float32).reshape(shape)
out = {}
for f in files:
    try:
        m = torch.jit.load(f).eval()
        with torch.no_grad():
            y = m(x)
        out[f] = [plain(v) for v in y.flatten().tolist()] if isinstance(y, torch.Tensor) and y.dtype == torch.float32 else None
    except Exception as e:
        out[f] = {"error": str(e)[:200]}
print(json.dumps(out))
`;
  const r = spawnSync(PYTHON, ['-c', script], { input: JSON.stringify([files, input]), encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`PyTorch check failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

function makeCorpus(source, outdir, seed, count) {
  const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'make_bad_corpus.py'), source, outdir, '--seed', String(seed),
    '--count', String(count)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make_bad_corpus.py failed: ${r.stderr}`);
  return JSON.parse(fs.readFileSync(path.join(outdir, 'corpus.json'), 'utf8'));
}

/** ms for one load of `file`, the median of `n`, plain and with { isolate: true }. */
async function isolateCost(tf, file, n) {
  const time = async (opts) => {
    const t = [];
    for (let i = 0; i < n; i++) {
      const s = process.hrtime.bigint();
      const m = await tf.load(file, opts);
      t.push(Number(process.hrtime.bigint() - s) / 1e6);
      m.dispose();
    }
    return t.sort((a, b) => a - b)[Math.floor(n / 2)];
  };
  await time(undefined);
  const plain = await time(undefined);
  // The first isolated load starts the child (Node + libtorch); later ones find it warm.
  await new Promise((r) => setTimeout(r, 6000));  // let an earlier child end (idle 5 s)
  const s = process.hrtime.bigint();
  (await tf.load(file, { isolate: true })).dispose();
  const cold = Number(process.hrtime.bigint() - s) / 1e6;
  return { plain, cold, isolated: await time({ isolate: true }) };
}

async function run(ctx) {
  const tf = require(ctx.dist);
  const rows = [];
  const source = path.join(ROOT, 'test', 'fixtures', 'convbn_scripted.pt');
  const dir = ctx.corpus || path.join(ctx.tmp, `corpus-seed-${ctx.seed}`);
  let files;
  let manifest = null;
  if (ctx.corpus) {
    files = filesBelow(ctx.corpus);
  } else {
    manifest = makeCorpus(source, dir, ctx.seed, ctx.quick ? 120 : 400);
    files = corpusFiles(dir);
  }
  ctx.log(`corpus: ${files.length} files from ${dir}`);

  // 1. In-process, as a service without isolation would meet them.
  const t0 = Date.now();
  const { results, crashes } = await tryFiles(files, { dist: ctx.dist });
  const loaded = [...results.entries()].filter(([, r]) => r.load === 'ok').map(([f]) => f);
  const unexpected = [...results.entries()].filter(([, r]) => r.load && r.load !== 'ok' && !LOAD_CODES.has(r.load));
  // A death after a load is the file's own only if it repeats with the file alone in a
  // fresh process; otherwise libtorch damaged its heap on an earlier file (collateral).
  const ours = [];
  let collateral = 0;
  for (const c of crashes.filter((x) => x.stage !== 'load')) {
    let own = false;
    for (let i = 0; i < 3 && !own; i++) own = (await tryFiles([c.file], { dist: ctx.dist })).crashes.length > 0;
    if (own) ours.push(c); else collateral++;
  }
  rows.push(row({
    scenario: 'bad files, plain load()', load: `${files.length} files, one process`, badInputs: files.length,
    crashes: crashes.length,
    ok: ours.length === 0 && unexpected.length === 0,
    notes: `${loaded.length} loaded, ${files.length - loaded.length - crashes.length} refused with a code; ` +
      `${crashes.length} killed libtorch while loading (${crashes.map((c) => `${path.basename(c.file)}: ${c.signal}`).join(', ') || 'none'}); ` +
      `${ours.length} died after a successful load (${collateral} more died later in a process libtorch had already damaged); other codes: ${unexpected.map(([f, r]) => `${path.basename(f)} ${r.load}`).join(', ') || 'none'}; ${((Date.now() - t0) / 1000).toFixed(1)} s`,
  }));

  // 2. The files that crashed, again with isolation: the service must survive.
  let contained = 0;
  const notContained = [];
  for (const c of crashes) {
    try {
      const m = await tf.load(c.file, { isolate: true });
      m.dispose();
      notContained.push(`${path.basename(c.file)} loaded`);
    } catch (e) {
      if (e instanceof tf.TorchfoldError && e.code === 'ERR_FILE_CORRUPT') contained++;
      else notContained.push(`${path.basename(c.file)} ${e.code || e.message}`);
    }
  }
  rows.push(row({
    scenario: 'bad files, load({ isolate: true })', load: `${crashes.length} files that crash libtorch`,
    badInputs: crashes.length, crashes: 0, ok: notContained.length === 0,
    notes: `${contained}/${crashes.length} refused with ERR_FILE_CORRUPT, this process alive${notContained.length ? `; not: ${notContained.join(', ')}` : ''}`,
  }));

  // 3. Files that load: torchfold's output equals PyTorch's on the same damaged file.
  const expected = torchOutputs(loaded, [1, 3, 8, 8]);
  let agree = 0;
  const disagree = [];
  for (const f of loaded) {
    const mine = results.get(f).output;
    const theirs = expected[f];
    if (!Array.isArray(theirs) || !Array.isArray(mine)) {
      if ((theirs && theirs.error) && results.get(f).forward !== 'ok') agree++; else disagree.push(path.basename(f));
      continue;
    }
    const same = mine.length === theirs.length &&
      mine.every((v, i) => v === theirs[i] || (typeof v === 'number' && typeof theirs[i] === 'number' &&
        Math.abs(v - theirs[i]) <= 1e-5 * (1 + Math.abs(theirs[i]))));
    if (same) agree++; else disagree.push(path.basename(f));
  }
  rows.push(row({
    scenario: 'damaged files that load', load: `${loaded.length} files, forward vs PyTorch`, badInputs: loaded.length,
    dataLost: disagree.length, ok: disagree.length === 0,
    notes: `${agree}/${loaded.length} give PyTorch's output (or fail in both)${disagree.length ? `; differ: ${disagree.join(', ')}` : ''}`,
  }));

  // 4. verify: every mutant whose tensor bytes were flipped under a valid CRC is refused.
  if (manifest) {
    const flipped = Object.entries(manifest.mutants).filter(([, d]) => d.kind === 'weights').map(([n]) => path.join(dir, 'mutants', n));
    const v = await tryFiles(flipped, { dist: ctx.dist, verify: true });
    const caught = [...v.results.values()].filter((r) => r.load === 'ERR_FILE_CORRUPT').length;
    const plain = flipped.filter((f) => results.get(f) && results.get(f).load === 'ok').length;
    rows.push(row({
      scenario: 'bit rot in weights, load({ verify: true })', load: `${flipped.length} files`, badInputs: flipped.length,
      crashes: v.crashes.length, dataLost: flipped.length - caught, ok: caught === flipped.length && v.crashes.length === 0,
      notes: `${caught}/${flipped.length} refused with ERR_FILE_CORRUPT; without verify ${plain} of them load with other weights`,
    }));
  }

  // 5. What isolation costs.
  const small = await isolateCost(tf, source, ctx.quick ? 3 : 7);
  const big = await isolateCost(tf, path.join(ROOT, 'test', 'fixtures', 'resnet18_traced.pt'), ctx.quick ? 3 : 5);
  rows.push(row({
    scenario: 'cost of isolate', load: 'load() median', ok: true,
    notes: `plain -> isolated (child warm) / first isolated (child starts): small model ${small.plain.toFixed(1)} -> ` +
      `${small.isolated.toFixed(0)} / ${small.cold.toFixed(0)} ms; ResNet-18 ${big.plain.toFixed(0)} -> ${big.isolated.toFixed(0)} / ${big.cold.toFixed(0)} ms`,
  }));
  return rows;
}

module.exports = { name: 'corpus', run, tryFiles, corpusFiles, filesBelow, torchOutputs, makeCorpus, LOAD_CODES };
