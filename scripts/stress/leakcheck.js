#!/usr/bin/env node
'use strict';
// Runs a short torchfold scenario under LeakSanitizer and sorts the leaks.
//
//   node scripts/stress/leakcheck.js [--reps 1,3] [--json] [--addon FILE] [--logs DIR]
//
// The addon is the ASAN build (build-asan/Debug/torchfold.node, made with
// `cd build-asan && cmake --build .`); node itself is not instrumented, so the
// ASAN runtime is preloaded (LD_PRELOAD=$(gcc -print-file-name=libasan.so)).
// Allocation stacks are unwound with DWARF (fast_unwind_on_malloc=0) because
// libtorch and node have no frame pointers: a fast unwind stops in them and
// never reaches the torchfold frames under them.
//
// The scenario runs once per entry of --reps (default 1 and 3 repetitions). A
// leak is sorted by its allocation stack:
//   ours       the innermost frame that is not the allocator is torchfold code
//              (native/core, native/addon, node-addon-api inlined into it);
//   via ours   torchfold frames lower in the stack (libtorch allocated it
//              while torchfold called it);
//   theirs     no torchfold frame: Node/V8 or libtorch on their own.
// A leak of ours, or one via ours that grows with the repetitions, fails the
// check; one via ours that stays the same is a one-time allocation (libtorch's
// lazy registries) and is listed. Memory errors ASAN finds fail it too.
// lsan.supp hides V8's heap bookkeeping only (see the file).
//
// --scenario REPS DIR is the part that runs under the sanitizer.
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { runNodeChild } = require('./common');

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');
const SCENARIO = 'resnet18 load, forward (good + 2 bad inputs), stateDict, inspect, fuse (+validate), toHalf, save ' +
  '(+extraFiles), readExtraFiles, verifyFile, reload, clone, to(cuda) refused, 8 bad loads, dispose, use after dispose, ' +
  'an output left to GC';
const BAD_INPUTS = 10;  // 8 bad loads + 2 bad forward inputs

// ---------------------------------------------------------------- scenario

async function scenario(reps, dir) {
  const v8 = require('v8');
  const vm = require('vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc');
  const tf = require(path.join(ROOT, 'dist'));
  const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8'));
  const fx = manifest.models.resnet18_traced;
  const ref = fx.cases[0].inputs[0].__tensor__;
  const bytes = fs.readFileSync(path.join(FIXTURES, ref.file));
  const input = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  const codes = {};
  const expectFailure = async (what, p) => {
    try { await p; codes[what] = 'NO ERROR'; } catch (e) { codes[what] = e.code || String(e.message).slice(0, 60); }
  };
  const badFiles = Object.values(manifest.bad).map((f) => path.join(FIXTURES, f));
  badFiles.push(path.join(dir, 'missing.pt'), dir);
  const steps = [];
  for (let r = 0; r < reps; r++) {
    const m = await tf.load(path.join(FIXTURES, fx.file));
    m.parameters(); m.buffers(); m.namedModules(); m.graph('forward', { inlined: true });
    for (const t of Object.values(m.stateDict())) t.dispose();
    const x = tf.Tensor.from(input, ref.shape);
    const y = await m.forward(x);
    y.toTypedArray();
    y.dispose();
    await expectFailure('forward(string)', m.forward('not a tensor'));
    await expectFailure('forward(wrong shape)', m.forward(tf.Tensor.from(new Float32Array(10), [10])));
    await m.inspect();
    const { module: f } = await m.fuse({ validate: { inputs: [ref.shape] } });
    const half = await m.toHalf({ dtype: 'bfloat16' });
    await half.module.dispose();
    const saved = path.join(dir, `fused-${r}.pt`);
    await f.save(saved, { extraFiles: { 'note.txt': 'leak check' } });
    await tf.readExtraFiles(saved, ['note.txt', 'absent.txt']);
    await tf.verifyFile(saved);
    const back = await tf.load(saved);
    (await back.forward(x)).dispose();
    const c = await m.clone();
    await expectFailure('to(cuda)', c.to('cuda'));
    for (const b of badFiles) await expectFailure(`load ${path.basename(b)}`, tf.load(b));
    await back.dispose();
    await c.dispose();
    await f.dispose();
    await m.forward(x);  // an output never disposed: its finalizer frees it
    await m.dispose();
    await expectFailure('forward after dispose', m.forward(x));
    x.dispose();
    steps.push(r + 1);
  }
  for (let i = 0; i < 4; i++) {
    gc();
    await new Promise((res) => setImmediate(res));
  }
  const maps = fs.readFileSync('/proc/self/maps', 'utf8');
  return {
    reps: steps.length, codes,
    asanLoaded: /libasan\.so/.test(maps),
    addonLoaded: maps.includes(path.resolve(process.env.TORCHFOLD_ADDON || '')),
  };
}

// ------------------------------------------------------------------ parse

const ALLOCATOR = /__interceptor_|libsanitizer|asan_malloc|asan_new_delete|^operator new|^malloc\b|^calloc\b|^realloc\b|^posix_memalign\b|^aligned_alloc\b/;
const OURS = /\/native\/(core|addon)\/|node-addon-api\/napi|torchfold\.node|\btorchfold::/;

function frameOf(line) {
  // "#3 0x7f.. in func(args) /path/file.cc:12" or "#3 0x7f.. (/lib/libx.so+0x12)"
  const m = /^\s*#\d+\s+0x[0-9a-f]+\s+(?:in\s+)?(.*)$/.exec(line);
  return m ? m[1].trim() : null;
}

function whereOf(frame) {
  if (OURS.test(frame)) return 'torchfold';
  if (/libtorch|libc10|\bc10::|\bat::|\btorch::/.test(frame)) return 'libtorch';
  if (/\/node\b|\bnode::|\bv8::|\buv_|libuv/.test(frame)) return 'node';
  return 'other';
}

/** Leak blocks, ASAN errors and suppression counts from sanitizer output. */
function parseReport(text) {
  const leaks = [];
  const errors = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const head = /^(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\) allocated from:/.exec(lines[i]);
    if (head) {
      const frames = [];
      for (i++; i < lines.length && /^\s*#\d+/.test(lines[i]); i++) frames.push(frameOf(lines[i]));
      const user = frames.filter((f) => f && !ALLOCATOR.test(f.replace(/^.*?\bin\s+/, '')));
      const top = user[0] || frames[frames.length - 1] || '?';
      const anyOurs = frames.some((f) => OURS.test(f));
      const cls = OURS.test(top) ? 'ours' : anyOurs ? 'via ours' : 'theirs';
      const fn = (f) => f.replace(/\s+\(\/.*\)$/, '').replace(/\s+\/\S+:\d+(:\d+)?$/, '').slice(0, 160);
      // Where torchfold comes in: its innermost frame, and what it called there.
      const at = frames.findIndex((f) => OURS.test(f));
      const short = (f) => f.replace(/\(.*\)(\s+const)?(?=\s|$)/, '()').replace(ROOT + path.sep, '');
      const site = at < 0 ? null : `${at > 0 ? `${short(fn(frames[at - 1]))} from ` : ''}${short(frames[at])}`;
      leaks.push({
        kind: head[1], bytes: Number(head[2]), objects: Number(head[3]), cls, where: whereOf(top), site,
        signature: `${head[1]} | ${user.slice(0, 4).map(fn).join(' < ')}`,
        stack: frames.slice(0, 24),
      });
      continue;
    }
    const err = /ERROR: AddressSanitizer: (.*)$/.exec(lines[i]);
    if (err) errors.push({ error: err[1], stack: lines.slice(i + 1, i + 14).filter((l) => /^\s*#\d+/.test(l)).map(frameOf) });
  }
  const suppressed = [];
  const s = text.indexOf('Suppressions used:');
  if (s >= 0) {
    for (const l of text.slice(s).split('\n').slice(2)) {
      const m = /^\s*(\d+)\s+(\d+)\s+(\S.*)$/.exec(l);
      if (m) suppressed.push({ count: Number(m[1]), bytes: Number(m[2]), rule: m[3] });
      else if (l.trim() && !/^-+$/.test(l.trim())) break;
    }
  }
  return { leaks, errors, suppressed };
}

function tally(leaks, cls) {
  const xs = leaks.filter((l) => l.cls === cls);
  return { reports: xs.length, objects: xs.reduce((s, l) => s + l.objects, 0), bytes: xs.reduce((s, l) => s + l.bytes, 0) };
}

function bySignature(leaks) {
  const m = new Map();
  for (const l of leaks) {
    const g = m.get(l.signature) || { ...l, objects: 0, bytes: 0 };
    g.objects += l.objects;
    g.bytes += l.bytes;
    m.set(l.signature, g);
  }
  return m;
}

// ----------------------------------------------------------------- parent

function args(argv) {
  const o = { reps: [1, 3], json: false, addon: null, logs: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--json') o.json = true;
    else if (argv[i] === '--reps') o.reps = argv[++i].split(',').map(Number);
    else if (argv[i] === '--addon') o.addon = path.resolve(argv[++i]);
    else if (argv[i] === '--logs') o.logs = path.resolve(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  return o;
}

function findLibasan() {
  for (const cc of ['gcc', 'cc']) {
    try {
      const p = execFileSync(cc, ['-print-file-name=libasan.so'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      if (path.isAbsolute(p) && fs.existsSync(p)) return p;
    } catch { /* next */ }
  }
  return null;
}

function newestSource() {
  let newest = 0;
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(cc|h)$/.test(e.name)) newest = Math.max(newest, fs.statSync(p).mtimeMs);
    }
  };
  walk(path.join(ROOT, 'native'));
  return newest;
}

function runOnce(reps, o, libasan, addon, logDir) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), `torchfold-leak-${reps}-`));
  const logBase = path.join(logDir, `lsan-reps${reps}`);
  const env = {
    ...process.env,
    LD_PRELOAD: libasan,
    TORCHFOLD_ADDON: addon,
    // libtorch and node were not built with ASAN: mismatch and ODR checks would only flag their own code.
    ASAN_OPTIONS: ['detect_leaks=1', 'exitcode=23', 'fast_unwind_on_malloc=0', 'malloc_context_size=40', 'detect_odr_violation=0',
      'alloc_dealloc_mismatch=0', 'new_delete_type_mismatch=0', `log_path=${logBase}`].join(':'),
    LSAN_OPTIONS: [`suppressions=${path.join(__dirname, 'lsan.supp')}`, 'print_suppressions=1'].join(':'),
  };
  const t0 = Date.now();
  return runNodeChild([__filename, '--scenario', String(reps), work], { env, timeoutMs: 15 * 60 * 1000 })
    .then(({ out, code, signal, stderr }) => {
      const seconds = (Date.now() - t0) / 1000;
      fs.rmSync(work, { recursive: true, force: true });
      const logs = fs.readdirSync(logDir).filter((f) => f.startsWith(`lsan-reps${reps}.`)).map((f) => path.join(logDir, f));
      const text = logs.map((f) => fs.readFileSync(f, 'utf8')).join('\n');
      const parsed = parseReport(text);
      // LeakSanitizer exits 23 when it reports leaks; anything else non-zero is a crash.
      const crashed = Boolean(signal) || !out || Boolean(out.error) || (code !== 0 && code !== 23);
      return { reps, seconds, code, signal, crashed, out, logs, stderrTail: stderr.trim().split('\n').slice(-3).join(' | '), ...parsed };
    });
}

async function main() {
  const o = args(process.argv.slice(2));
  const emit = (result) => {
    if (o.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else print(result);
  };
  const libasan = findLibasan();
  const addon = o.addon || process.env.TORCHFOLD_ASAN_ADDON || path.join(ROOT, 'build-asan', 'Debug', 'torchfold.node');
  if (!libasan) {
    emit({ ran: false, scenario: SCENARIO, reason: 'no libasan.so: apt-get install -y gcc (libasan8 comes with it)' });
    return;
  }
  if (!fs.existsSync(addon)) {
    emit({ ran: false, scenario: SCENARIO, reason: `no ASAN build at ${addon}: cd build-asan && cmake --build . (build-asan is a cmake-js build configured with -fsanitize=address)` });
    return;
  }
  const stale = newestSource() > fs.statSync(addon).mtimeMs;
  const logDir = o.logs || fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-lsan-'));
  fs.mkdirSync(logDir, { recursive: true });
  const runs = [];
  for (const reps of o.reps) runs.push(await runOnce(reps, o, libasan, addon, logDir));

  const first = runs[0];
  const last = runs[runs.length - 1];
  const a = bySignature(first.leaks);
  const b = bySignature(last.leaks);
  const mine = [];
  for (const [sig, g] of b) {
    if (g.cls === 'theirs') continue;
    const before = a.get(sig);
    const grows = runs.length > 1 && (!before || g.objects > before.objects);
    mine.push({ cls: g.cls, signature: sig, site: g.site, objects: { [first.reps]: before ? before.objects : 0, [last.reps]: g.objects },
      bytes: g.bytes, grows, stack: g.stack });
  }
  for (const [sig, g] of a) {
    if (g.cls !== 'theirs' && !b.has(sig)) mine.push({ cls: g.cls, signature: sig, site: g.site, objects: { [first.reps]: g.objects, [last.reps]: 0 }, bytes: g.bytes, grows: false, stack: g.stack });
  }
  // One line per torchfold call site (several blocks of one leaked object share it).
  const sites = new Map();
  for (const l of mine.filter((x) => x.cls === 'ours' || x.grows)) {
    const key = `${l.cls}${l.grows ? ', grows' : ''}: ${l.site}`;
    const e = sites.get(key) || { blocks: 0, bytes: 0, objects: {} };
    e.blocks++;
    e.bytes += l.bytes;
    for (const [k, v] of Object.entries(l.objects)) e.objects[k] = (e.objects[k] || 0) + v;
    sites.set(key, e);
  }
  const failing = mine.filter((l) => l.cls === 'ours' || l.grows);
  const errors = runs.flatMap((r) => r.errors);
  const crashed = runs.filter((r) => r.crashed);
  const notLoaded = runs.filter((r) => r.out && !(r.out.asanLoaded && r.out.addonLoaded));
  const ok = failing.length === 0 && errors.length === 0 && crashed.length === 0 && notLoaded.length === 0;

  const perRun = runs.map((r) => {
    const ours = tally(r.leaks, 'ours');
    const via = tally(r.leaks, 'via ours');
    const theirs = r.leaks.filter((l) => l.cls === 'theirs');
    const where = (w) => theirs.filter((l) => l.where === w).reduce((s, l) => s + l.bytes, 0);
    const hidden = r.suppressed.reduce((s, x) => s + x.count, 0);
    return `reps ${r.reps}: ${r.seconds.toFixed(0)} s, exit ${r.signal || r.code}; ours ${ours.reports} (${ours.bytes} B), ` +
      `via ours ${via.reports} (${via.bytes} B), theirs ${theirs.length} (node ${where('node')} B, libtorch ${where('libtorch')} B, ` +
      `other ${where('other')} B), ${hidden} V8-heap false positives suppressed` +
      `${r.errors.length ? `, ASAN errors: ${r.errors.map((e) => e.error).join('; ')}` : ''}` +
      `${r.crashed ? `, FAILED (${r.out && r.out.error ? r.out.error.split('\n')[0] : r.stderrTail})` : ''}`;
  });
  const summary = `LeakSanitizer (ASAN build ${addon.startsWith(ROOT + path.sep) ? path.relative(ROOT, addon) : addon}${stale ? ', OLDER than native/ sources' : ''}): ` +
    `${perRun.join('; ')}. ` +
    (failing.length ? `torchfold leaks: ${[...sites].map(([k, e]) => `[${k}] ${e.blocks} blocks, objects by reps ` +
      `${Object.entries(e.objects).map(([r, n]) => `${r}:${n}`).join(' ')}, ${e.bytes} B at reps ${last.reps}`).join(' ; ')}. ` : 'no leak attributable to torchfold. ') +
    (mine.length > failing.length ? `one-time allocations reached through torchfold: ${mine.length - failing.length}. ` : '') +
    (notLoaded.length ? 'WARNING: ASAN runtime or ASAN addon not mapped in the child. ' : '') +
    `logs: ${logDir}`;
  emit({ ran: true, scenario: SCENARIO, badInputs: BAD_INPUTS, ok, stale, addon, logDir, summary,
    runs: runs.map((r) => ({ reps: r.reps, seconds: r.seconds, code: r.code, signal: r.signal, crashed: r.crashed,
      codes: r.out && r.out.codes, asanLoaded: r.out && r.out.asanLoaded, addonLoaded: r.out && r.out.addonLoaded,
      ours: tally(r.leaks, 'ours'), viaOurs: tally(r.leaks, 'via ours'), theirs: tally(r.leaks, 'theirs'),
      suppressed: r.suppressed, errors: r.errors })),
    torchfold: mine });
}

function print(r) {
  if (!r.ran) { console.log(`leak check not run: ${r.reason}`); return; }
  console.log(r.summary);
  for (const l of r.torchfold) {
    console.log(`\n[${l.cls}${l.grows ? ', GROWS' : ''}] objects by reps ${JSON.stringify(l.objects)}, ${l.bytes} B\n  ${l.stack.join('\n  ')}`);
  }
  console.log(r.ok ? '\nOK' : '\nFAILED');
}

if (require.main === module) {
  if (process.argv[2] === '--scenario') {
    scenario(Number(process.argv[3]), process.argv[4]).then(
      (out) => process.stdout.write(`${JSON.stringify(out)}\n`),
      (e) => { process.stdout.write(`${JSON.stringify({ error: String(e && e.stack || e) })}\n`); process.exitCode = 1; },
    );
  } else {
    main().catch((e) => { console.error(e); process.exitCode = 1; });
  }
}

module.exports = { parseReport };
