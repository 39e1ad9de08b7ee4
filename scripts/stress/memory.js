'use strict';
// Stress scenario "memory": does torchfold hold on to memory it should give
// back, and does V8 know what the native side holds?
//
//   a. 10,000 forwards of ResNet-18 (1,000 with ctx.quick): RSS after the
//      warm-up against RSS at the end, every output compared with PyTorch's.
//   b. 200 load -> fuse -> dispose cycles (40 with ctx.quick): RSS after
//      cycle 10 against RSS at the end. When it grows, the run is repeated
//      with MALLOC_ARENA_MAX=2 and glibc's view (bytes in use, malloc_trim) is
//      reported, to tell allocator retention from a leak.
//   c. native memory reported to V8: the counter V8 schedules GCs from moves by
//      a module's parameter + buffer bytes on load and back on dispose, and by
//      a tensor's bytes; and modules dropped without dispose() are collected by
//      GC driven by that counter alone.
//   d. leak check: scripts/stress/leakcheck.js (LeakSanitizer over the ASAN
//      build in build-asan/), leaks split into torchfold's and libtorch/Node's.
//
// a-c each run in a child process of their own (this file with --child), so
// the RSS measured is not that of other scenarios; the child prints one JSON
// line. Reading V8's counter and glibc's statistics takes a ten-line probe
// addon compiled here with `cc` (memprobe.c); without a compiler those
// parts say so and the RSS parts still run.
const fs = require('fs');
const path = require('path');
const { row, rss, loopDelay, pct, runNodeChild } = require('./common');

const MODEL = 'resnet18_traced';
const GROWTH_LIMIT_PCT = 5;
// Other reporters to V8 during a measured window: V8 itself (tens of bytes)
// and ArrayBuffers (subtracted). 4 KiB is far below the amounts checked.
const { buildProbe } = require('./memprobe');
const ACCOUNTING_TOLERANCE = 4096;
const ELEMENT_BYTES = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int8: 1, int16: 2, int32: 4, int64: 8, uint8: 1, bool: 1,
};
const MB = 1024 * 1024;



// ---------------------------------------------------------------- fixtures

function fixture(root) {
  const dir = path.join(root, 'test', 'fixtures');
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const m = manifest.models[MODEL];
  const c = m.cases[0];
  const input = c.inputs[0].__tensor__;
  const output = c.output.__tensor__;
  return {
    model: path.join(dir, m.file),
    input: { ...input, file: path.join(dir, input.file) },
    output: { ...output, file: path.join(dir, output.file) },
    atol: c.atol ?? 1e-5,
    bad: path.join(dir, manifest.bad.truncated),
  };
}

function readFloat32(ref) {
  if (ref.dtype !== 'float32') throw new Error(`expected a float32 fixture, got ${ref.dtype}`);
  const b = fs.readFileSync(ref.file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function maxAbsDiff(actual, expected) {
  if (actual.length !== expected.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    if (Number.isNaN(d)) return Infinity;
    if (d > worst) worst = d;
  }
  return worst;
}

const infoBytes = (infos) => infos.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * ELEMENT_BYTES[t.dtype], 0);
const moduleBytes = (m) => infoBytes([...m.parameters(), ...m.buffers()]);

// ------------------------------------------------------------------- child

const tick = () => new Promise((r) => setImmediate(r));

/** Full GCs with event-loop turns between (napi finalizers run there), then the numbers. */
async function settle(probe) {
  for (let i = 0; i < 3; i++) {
    global.gc();
    await tick();
  }
  const out = { rss: rss(), heapUsed: process.memoryUsage().heapUsed, arrayBuffers: process.memoryUsage().arrayBuffers };
  if (probe) {
    out.mallocInUse = probe.inuse();
    out.mallocFree = probe.heldfree();
    out.reported = probe.reported();
  }
  return out;
}

function loadProbe(o) {
  if (!o.probe) return null;
  try { return require(o.probe); } catch { return null; }
}

async function childForwards(o) {
  const tf = require(o.dist);
  const probe = loadProbe(o);
  const fx = fixture(o.root);
  const expected = readFloat32(fx.output);
  const m = await tf.load(fx.model);
  const x = tf.Tensor.from(readFloat32(fx.input), fx.input.shape);
  let started = 0;
  let finished = 0;
  let worst = 0;
  let bad = 0;
  let lastDiff = null;
  const samples = [];
  const lane = async (limit) => {
    while (started < limit) {
      started++;
      const y = await m.forward(x);
      lastDiff = maxAbsDiff(y.toValues(), expected);
      y.dispose();
      if (!(lastDiff <= fx.atol)) bad++;
      worst = Math.max(worst, lastDiff);
      finished++;
      if (finished % o.sampleEvery === 0) samples.push({ at: finished, rss: rss() });
    }
  };
  const runTo = (limit) => Promise.all(Array.from({ length: o.concurrency }, () => lane(limit)));
  await runTo(o.warmup);
  const warm = await settle(probe);
  const delay = loopDelay();
  const t0 = performance.now();
  await runTo(o.total);
  const seconds = (performance.now() - t0) / 1000;
  const maxDelayMs = delay.stop();
  const end = await settle(probe);
  await m.dispose();
  x.dispose();
  return {
    total: finished, warmup: o.warmup, measured: finished - o.warmup, concurrency: o.concurrency,
    threads: tf.getNumThreads(), seconds, perSec: (finished - o.warmup) / seconds, maxDelayMs,
    warm, end, samples, worst, bad, lastDiff, atol: fx.atol, inputShape: fx.input.shape,
  };
}

async function childCycles(o) {
  const tf = require(o.dist);
  const probe = loadProbe(o);
  const fx = fixture(o.root);
  const expected = readFloat32(fx.output);
  // The proposed addon change (mallopt at load), done by the probe instead.
  const pinned = Boolean(o.pinMmapThreshold && probe && probe.pinMmapThreshold() === 1);
  const x = tf.Tensor.from(readFloat32(fx.input), fx.input.shape);
  let ref = null;
  const samples = [];
  const checks = [];
  let folded = 0;
  const trimMs = [];
  const delay = loopDelay();
  const t0 = performance.now();
  for (let i = 1; i <= o.cycles; i++) {
    const m = await tf.load(fx.model);
    const { module: f, report } = await m.fuse();
    folded = report.pairs.filter((p) => p.status === 'folded').length;
    if (i === 1 || i === o.cycles) {
      const y = await f.forward(x);
      checks.push({ cycle: i, diff: maxAbsDiff(y.toValues(), expected) });
      y.dispose();
    }
    await f.dispose();
    await m.dispose();
    if (o.trimAfterDispose && probe) {
      // What the proposed addon change would do: give free heap pages back after a module is freed.
      const t = performance.now();
      probe.trim();
      trimMs.push(performance.now() - t);
    }
    if (i === o.ref) ref = { cycle: i, ...(await settle(probe)) };
    if (i % o.sampleEvery === 0) samples.push({ cycle: i, ...(await settle(probe)) });
  }
  const seconds = (performance.now() - t0) / 1000;
  const maxDelayMs = delay.stop();
  const end = await settle(probe);
  let trimmed = null;
  if (probe) {
    probe.trim();
    trimmed = { rss: rss(), mallocFree: probe.heldfree() };
  }
  x.dispose();
  return {
    cycles: o.cycles, seconds, maxDelayMs, ref, end, trimmed, samples, checks, folded, atol: fx.atol,
    arenaMax: process.env.MALLOC_ARENA_MAX || null, pinned,
    trimMs: trimMs.length ? { median: trimMs.sort((a, b) => a - b)[trimMs.length >> 1], max: trimMs[trimMs.length - 1] } : null,
  };
}

async function childExternal(o) {
  const tf = require(o.dist);
  const probe = loadProbe(o);
  if (!probe) throw new Error('no probe addon');
  const fx = fixture(o.root);
  const snap = () => settle(probe);
  const native = (a, b) => (b.reported - a.reported) - (b.arrayBuffers - a.arrayBuffers);
  const checks = [];
  const check = (what, actual, expected) => checks.push({ what, actual, expected, ok: Math.abs(actual - expected) <= ACCOUNTING_TOLERANCE });

  const s0 = await snap();
  const ext0 = process.memoryUsage().external;
  const m = await tf.load(fx.model);
  const bytes = moduleBytes(m);
  const s1 = await snap();
  const externalFieldDelta = process.memoryUsage().external - ext0;
  check('load', native(s0, s1), bytes);

  const x = tf.Tensor.from(readFloat32(fx.input), fx.input.shape);
  const s2 = await snap();
  check('Tensor.from', native(s1, s2), x.numel * 4);

  const outs = [];
  for (let i = 0; i < 20; i++) outs.push(await m.forward(x));
  const outBytes = outs.reduce((s, t) => s + t.numel * ELEMENT_BYTES[t.dtype], 0);
  check('20 forward outputs', native(s2, await snap()), outBytes);
  for (const t of outs) t.dispose();
  check('outputs disposed', native(s2, await snap()), 0);
  for (let i = 0; i < 20; i++) await m.forward(x);  // never disposed: GC finalizes them
  check('outputs left to GC', native(s2, await snap()), 0);

  const { module: f } = await m.fuse();
  check('fused module', native(s2, await snap()), moduleBytes(f));
  await f.dispose();
  check('fused disposed', native(s2, await snap()), 0);
  let failed = null;
  try { await tf.load(fx.bad); } catch (e) { failed = e.code; }
  check(`failed load (${failed})`, native(s2, await snap()), 0);
  await m.dispose();
  x.dispose();
  check('all disposed', native(s0, await snap()), 0);

  // Modules dropped without dispose(): only the reported bytes can make V8
  // collect them (each holds ~47 MB natively and a few hundred bytes of heap).
  const K = o.dropped;
  // V8 prints why it starts marking; the parent counts 'external memory pressure'.
  require('v8').setFlagsFromString('--trace-incremental-marking');
  let peakRss = rss();
  let peakAlive = 0;
  const base = (await snap()).reported;
  for (let i = 0; i < K; i++) {
    await tf.load(fx.model);
    await tick();
    peakRss = Math.max(peakRss, rss());
    peakAlive = Math.max(peakAlive, Math.round((probe.reported() - base) / bytes));
  }
  require('v8').setFlagsFromString('--no-trace-incremental-marking');
  const after = await snap();
  return {
    moduleBytes: bytes, checks, externalFieldDelta, tolerance: ACCOUNTING_TOLERANCE,
    dropped: { count: K, peakAlive, peakRss, rssBefore: s0.rss, leftAlive: Math.round((after.reported - base) / bytes) },
  };
}

const CHILDREN = { forwards: childForwards, cycles: childCycles, external: childExternal };

if (require.main === module && process.argv[2] === '--child') {
  const kind = process.argv[3];
  const opts = JSON.parse(process.argv[4]);
  CHILDREN[kind](opts).then(
    (out) => { process.stdout.write(`${JSON.stringify(out)}\n`); },
    (e) => { process.stdout.write(`${JSON.stringify({ error: String(e && e.stack || e) })}\n`); process.exitCode = 1; },
  );
}

// ------------------------------------------------------------------ parent

function childEnv(ctx, extra = {}) {
  const env = { ...process.env, ...extra };
  if (!env.TORCHFOLD_ADDON) {
    const built = path.join(ctx.root, 'build', 'Release', 'torchfold.node');
    if (fs.existsSync(built)) env.TORCHFOLD_ADDON = built;
  } else {
    env.TORCHFOLD_ADDON = path.resolve(env.TORCHFOLD_ADDON);
  }
  return env;
}

/** Runs this file as a child; resolves { out, code, signal, stderr } (out: the parsed JSON line or null). */
function runChild(ctx, kind, opts, env = {}) {
  return runNodeChild(['--expose-gc', __filename, '--child', kind, JSON.stringify(opts)], { env: childEnv(ctx, env) })
    .then((r) => ({ ...r, stderr: r.stderr.trim().split('\n').slice(-3).join(' | ') }));
}

const mb = (b) => `${(b / MB).toFixed(1)} MB`;
const signed = (p) => `${p >= 0 ? '+' : ''}${p.toFixed(2)}%`;
const crashOf = (r) => (r.signal || (r.code !== 0 && !r.out) ? 1 : 0);
const failure = (r) => (r.out && r.out.error) ? r.out.error.split('\n')[0]
  : `child exited ${r.signal || r.code}${r.stderr ? `: ${r.stderr}` : ''}`;

async function forwardsRow(ctx, probe) {
  const total = ctx.quick ? 1000 : 10000;
  const warmup = 200;
  const scenario = '10,000 forwards (ResNet-18)';
  const r = await runChild(ctx, 'forwards', {
    dist: ctx.dist, root: ctx.root, probe, total, warmup, concurrency: 2, sampleEvery: total / 10,
  });
  const o = r.out;
  if (!o || o.error) {
    return row({ scenario, load: `${total} forwards`, crashes: crashOf(r), notes: `failed: ${failure(r)}` });
  }
  const growth = pct(o.end.rss, o.warm.rss);
  const malloc = o.warm.mallocInUse != null ? `; malloc in use ${mb(o.warm.mallocInUse)} -> ${mb(o.end.mallocInUse)}` : '';
  const ok = growth < GROWTH_LIMIT_PCT && o.bad === 0 && o.total === total;
  return row({
    scenario,
    load: `${o.total.toLocaleString('en-US')} forwards${ctx.quick ? ' (quick)' : ''} of ${MODEL}, input [${o.inputShape}], ` +
      `${o.concurrency} in flight, ${o.threads} intra-op threads, every output checked`,
    dataLost: o.bad,
    rssGrowthPct: Number(growth.toFixed(2)),
    maxDelayMs: Number(o.maxDelayMs.toFixed(1)),
    ok,
    notes: `RSS after ${o.warmup} warm-up ${mb(o.warm.rss)} -> after ${o.total} ${mb(o.end.rss)} (${signed(growth)}, limit ${GROWTH_LIMIT_PCT}%)` +
      `${malloc}; ${o.measured} forwards in ${o.seconds.toFixed(1)} s (${o.perSec.toFixed(1)}/s); ` +
      `max |diff| vs PyTorch ${o.worst.toExponential(2)} (last ${o.lastDiff.toExponential(2)}, atol ${o.atol}), ${o.bad} outside; ` +
      `RSS samples ${o.samples.map((s) => (s.rss / MB).toFixed(0)).join(',')} MB`,
  });
}

function describeCycles(o) {
  const growth = pct(o.end.rss, o.ref.rss);
  let s = `RSS after cycle ${o.ref.cycle} ${mb(o.ref.rss)} -> after ${o.cycles} ${mb(o.end.rss)} (${signed(growth)})`;
  if (o.ref.mallocInUse != null) {
    s += `; malloc in use ${mb(o.ref.mallocInUse)} -> ${mb(o.end.mallocInUse)}, free kept by glibc ` +
      `${mb(o.ref.mallocFree)} -> ${mb(o.end.mallocFree)}`;
  }
  if (o.trimmed) s += `; RSS after malloc_trim ${mb(o.trimmed.rss)}`;
  // Bounded or not: the second half of the run against its middle.
  const mid = o.samples.find((x) => x.cycle >= o.cycles / 2);
  if (mid && mid.cycle < o.cycles) s += `; cycle ${mid.cycle} -> ${o.cycles}: ${signed(pct(o.end.rss, mid.rss))}`;
  return { growth, text: s };
}

async function cyclesRow(ctx, probe) {
  const cycles = ctx.quick ? 40 : 200;
  const scenario = '200 load -> fuse -> dispose cycles';
  const opts = { dist: ctx.dist, root: ctx.root, probe, cycles, ref: 10, sampleEvery: 10 };
  const r = await runChild(ctx, 'cycles', opts);
  const o = r.out;
  if (!o || o.error) {
    return row({ scenario, load: `${cycles} cycles`, crashes: crashOf(r), notes: `failed: ${failure(r)}` });
  }
  const first = describeCycles(o);
  const wrong = o.checks.filter((c) => !(c.diff <= o.atol)).length;
  let verdict = '';
  if (first.growth >= GROWTH_LIMIT_PCT && o.ref.mallocInUse != null) {
    // A leak keeps bytes in use; glibc keeping freed pages shows as free bytes, which malloc_trim hands back.
    const inUse = pct(o.end.mallocInUse, o.ref.mallocInUse);
    verdict = inUse < 1 && o.trimmed && o.trimmed.rss <= o.ref.rss * (1 + GROWTH_LIMIT_PCT / 100)
      ? `verdict: glibc keeping freed pages, not a leak (malloc in use ${signed(inUse)}, RSS after malloc_trim at or below cycle ${o.ref.cycle}'s); `
      : `verdict: bytes in use grow (${signed(inUse)}): look for a leak; `;
  }
  let notes = `${verdict}${first.text}; ${cycles} cycles in ${o.seconds.toFixed(1)} s (${(o.seconds / cycles * 1000).toFixed(0)} ms each, ` +
    `${o.folded} pairs folded); fused output vs PyTorch at cycles ${o.checks.map((c) => `${c.cycle}: ${c.diff.toExponential(2)}`).join(', ')} ` +
    `(atol ${o.atol}); RSS every 10 cycles ${o.samples.map((s) => (s.rss / MB).toFixed(0)).join(',')} MB`;
  if (first.growth >= GROWTH_LIMIT_PCT) {
    // Tell allocator retention from a leak: the same run with two malloc
    // arenas, and with glibc's mmap threshold pinned at 1 MiB (what the
    // proposed change to the addon does), each in a fresh child.
    const variants = [['MALLOC_ARENA_MAX=2', {}, { MALLOC_ARENA_MAX: '2' }]];
    if (probe) variants.push(['mallopt(M_MMAP_THRESHOLD, 1 MiB) at start', { pinMmapThreshold: true }, {}]);
    for (const [label, extra, env] of variants) {
      const r2 = await runChild(ctx, 'cycles', { ...opts, ...extra }, env);
      if (r2.out && !r2.out.error && (!extra.pinMmapThreshold || r2.out.pinned)) notes += `; with ${label}: ${describeCycles(r2.out).text}`;
      else notes += `; ${label} run failed: ${r2.out && r2.out.error ? failure(r2) : r2.out ? 'mallopt refused' : failure(r2)}`;
    }
  }
  return row({
    scenario,
    load: `${cycles} cycles${ctx.quick ? ' (quick)' : ''} of load ${MODEL} (${mb(fs.statSync(fixture(ctx.root).model).size)} file) -> fuse() -> dispose both`,
    dataLost: wrong,
    rssGrowthPct: Number(first.growth.toFixed(2)),
    maxDelayMs: Number(o.maxDelayMs.toFixed(1)),
    ok: first.growth < GROWTH_LIMIT_PCT && wrong === 0,
    notes,
  });
}

async function externalRow(ctx, probe, probeError) {
  const scenario = 'native memory reported to V8';
  if (!probe) return row({ scenario, load: 'load/forward/fuse/dispose', notes: `not run: ${probeError}` });
  const dropped = ctx.quick ? 12 : 24;
  const r = await runChild(ctx, 'external', { dist: ctx.dist, root: ctx.root, probe, dropped });
  const o = r.out;
  if (!o || o.error) return row({ scenario, load: 'load/forward/fuse/dispose', crashes: crashOf(r), notes: `failed: ${failure(r)}` });
  const bad = o.checks.filter((c) => !c.ok);
  const d = o.dropped;
  // Without the reported bytes nothing would make V8 collect: the heap side of
  // each dropped module is tiny. Half the modules alive at most is a loose bar.
  const pressure = (r.stdout.match(/Start \(external memory pressure\)/g) || []).length;
  const gcOk = d.peakAlive <= Math.ceil(d.count / 2) && d.leftAlive === 0 && pressure > 0;
  return row({
    scenario,
    load: `load ${MODEL}, Tensor.from, 20 forwards, fuse, a failed load; then ${d.count} loads never disposed`,
    badInputs: 1,
    ok: bad.length === 0 && gcOk,
    notes: `V8 external counter (napi_adjust_external_memory total, ArrayBuffers subtracted; tolerance ${o.tolerance} B): ` +
      o.checks.map((c) => `${c.what} ${c.actual} B${c.expected ? ` (expected ${c.expected})` : ''}${c.ok ? '' : ' MISMATCH'}`).join(', ') +
      `; process.memoryUsage().external moved ${o.externalFieldDelta} B on load (on Node ${process.versions.node} it counts ` +
      `ArrayBuffers only, not napi_adjust_external_memory); ${d.count} modules dropped without dispose: at most ` +
      `${d.peakAlive} alive at once, ${d.leftAlive} left after GC, V8 started marking for 'external memory pressure' ${pressure} times, peak RSS ${mb(d.peakRss)} (${d.count} x ${mb(o.moduleBytes)} ` +
      `would be ${mb(d.count * o.moduleBytes)})`,
  });
}

function leakRow(ctx) {
  const scenario = 'leak check (LeakSanitizer)';
  const args = [path.join(__dirname, 'leakcheck.js'), '--json', '--reps', ctx.quick ? '1,2' : '1,3',
    '--logs', path.join(ctx.tmp, 'lsan')];
  return runNodeChild(args, { env: childEnv(ctx) }).then(({ out: o, code, signal, stderr }) => {
    if (!o) {
      return row({ scenario, load: 'leakcheck.js', crashes: signal ? 1 : 0,
        notes: `failed: leakcheck.js exited ${signal || code}: ${stderr.trim().split('\n').slice(-2).join(' | ')}` });
    }
    if (!o.ran) return row({ scenario, load: o.scenario || 'leakcheck.js', notes: `not run: ${o.reason}` });
    return row({
      scenario,
      load: o.scenario,
      badInputs: o.badInputs,
      crashes: o.runs.filter((x) => x.crashed).length,
      ok: o.ok,
      notes: o.summary,
    });
  });
}

async function run(ctx) {
  const log = ctx.log || (() => {});
  const built = buildProbe(ctx.tmp);
  if (built.error) log(`memory: ${built.error}; V8/glibc counters are not read`);
  const rows = [];
  log('memory: forwards ...');
  rows.push(await forwardsRow(ctx, built.file));
  log('memory: load -> fuse -> dispose cycles ...');
  rows.push(await cyclesRow(ctx, built.file));
  log('memory: V8 accounting ...');
  rows.push(await externalRow(ctx, built.file, built.error));
  log('memory: leak check ...');
  rows.push(await leakRow(ctx));
  return rows;
}

module.exports = { name: 'memory', run };
