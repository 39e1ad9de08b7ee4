'use strict';
// Load and concurrency, bad options and tensors. Three scenarios, one row each
// (see common.js for the row contract):
//   a. 1,000 forwards in flight at once on one module (200 with ctx.quick) while
//      fuse(), save() and clone() run on it, and dispose() called half-way:
//      every result checked against PyTorch's output, the fused / cloned / saved
//      modules too, and calls after dispose() must reject with ERR_DISPOSED;
//   b. the addon in 4 worker_threads at once, each loading, fusing and running a
//      model, then exiting; rounds where the main thread terminates workers in
//      the middle of their work; and processes that exit while workers are busy;
//   c. a table of bad arguments and tensors (wrong shapes, dtypes, devices,
//      input counts, option values and keys, NaN/Inf inputs, huge sample
//      shapes), repeated many times while RSS is watched for leaks.
// Each scenario runs in a child process (this file, `--child <part> <json>`),
// so a crash is counted instead of ending the run. The event-loop bar is
// max delay < 20 ms, measured with common.loopDelay() in the process doing the
// work; each stall is also split into time the JS thread ran and time it waited
// for a CPU, and an idle Node process beside it measures the machine's own share
// (see delayProblem()).
const { spawn, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { ROOT, row, rss, loopDelay, scratch, rng, pct } = require('./common');

const SELF = __filename;
const DELAY_BAR_MS = 20;
const PYTHON = '/usr/bin/python3';

// ------------------------------------------------------------------ shared

function childEnv(ctx) {
  const env = { ...process.env, NO_COLOR: '1' };
  if (env.TORCHFOLD_ADDON) {
    env.TORCHFOLD_ADDON = path.resolve(env.TORCHFOLD_ADDON);
  } else {
    const built = path.join(ctx.root || ROOT, 'build', 'Release', 'torchfold.node');
    if (fs.existsSync(built)) env.TORCHFOLD_ADDON = built;
  }
  return env;
}

function fixtureDir(root) { return path.join(root, 'test', 'fixtures'); }

/** A fixture model with its first case: input and PyTorch's output as float32 files. */
function fixture(root, name) {
  const dir = fixtureDir(root);
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  const m = manifest.models[name];
  if (!m) throw new Error(`no fixture model ${name} in ${dir}/manifest.json`);
  const c = m.cases[0];
  const input = c.inputs[0].__tensor__;
  const output = c.output.__tensor__;
  return {
    name,
    model: path.join(dir, m.file),
    input: path.join(dir, input.file),
    shape: input.shape,
    output: path.join(dir, output.file),
    outShape: output.shape,
    atol: c.atol ?? 1e-5,
    bad: Object.fromEntries(Object.entries(manifest.bad || {}).map(([k, v]) => [k, path.join(dir, v)])),
  };
}

function readFloat32(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

/** Largest |a - b|; Infinity on a length mismatch or a NaN that is not in both. */
function maxAbsDiff(actual, expected) {
  if (!actual || actual.length !== expected.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(a) || Number.isNaN(e)) {
      if (Number.isNaN(a) && Number.isNaN(e)) continue;
      return Infinity;
    }
    if (a === e) continue;  // equal infinities included
    const d = Math.abs(a - e);
    if (!(d <= worst)) worst = d;  // an infinity against a finite value gives Infinity
  }
  return worst;
}

/** The output tensor's values (and disposes it), or null when it is not a Tensor. */
function valuesOf(tf, out) {
  if (!(out instanceof tf.Tensor)) return null;
  const v = out.toValues();
  out.dispose();
  return v;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const round1 = (x) => (x === null || x === undefined ? x : Math.round(x * 10) / 10);
const mb = (bytes) => Math.round(bytes / 1048576);

/** Runs this file as `--child <part>`; resolves to its RESULT line (parsed), exit code and signal. */
function runChild(ctx, part, args, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', SELF, '--child', part, JSON.stringify(args)],
      { env: childEnv(ctx), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '', timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s) => { stdout += s; });
    child.stderr.setEncoding('utf8').on('data', (s) => { stderr += s; });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = stdout.split('\n').reverse().find((l) => l.startsWith('RESULT '));
      let result = null;
      if (line) { try { result = JSON.parse(line.slice(7)); } catch { result = null; } }
      resolve({ code, signal, timedOut, result, stderrTail: stderr.trim().split('\n').slice(-6).join(' | ').slice(0, 600) });
    });
  });
}

/**
 * Main-thread stalls longer than the bar, each split (from the thread's
 * /proc schedstat) into time it ran on a CPU (work on the JS thread), time it
 * waited for a CPU (other threads or processes had them all), and the rest:
 * time it was blocked (a lock, I/O, a join), less the probe's 2 ms period.
 */
function stallProbe(thresholdMs = DELAY_BAR_MS) {
  const file = `/proc/${process.pid}/task/${process.pid}/schedstat`;
  const read = () => {
    try { const [run, wait] = fs.readFileSync(file, 'utf8').trim().split(/\s+/).map(Number); return { run, wait }; } catch { return null; }
  };
  let lastT = performance.now();
  let lastS = read();
  const stalls = [];
  const timer = setInterval(() => {
    const t = performance.now();
    const st = read();
    if (t - lastT > thresholdMs && st && lastS) {
      const onCpuMs = (st.run - lastS.run) / 1e6, waitMs = (st.wait - lastS.wait) / 1e6;
      stalls.push({ gapMs: t - lastT, onCpuMs, waitMs, blockedMs: Math.max(0, t - lastT - 2 - onCpuMs - waitMs) });
    }
    lastT = t;
    lastS = st;
  }, 2);
  return {
    stop() {
      clearInterval(timer);
      const worst = stalls.reduce((a, b) => (b.gapMs > (a ? a.gapMs : 0) ? b : a), null);
      return {
        count: stalls.length,
        worstGapMs: worst ? round1(worst.gapMs) : 0,
        worstGapOnCpuMs: worst ? round1(worst.onCpuMs) : 0,
        worstGapWaitMs: worst ? round1(worst.waitMs) : 0,
        worstGapBlockedMs: worst ? round1(worst.blockedMs) : 0,
        maxOnCpuMs: round1(stalls.reduce((a, b) => Math.max(a, b.onCpuMs), 0)),
        maxBlockedMs: round1(stalls.reduce((a, b) => Math.max(a, b.blockedMs), 0)),
        available: lastS !== null,
      };
    },
  };
}

/**
 * A process that does nothing but measure its own event-loop delay (and, like
 * stallProbe, the longest time its thread was neither running nor waiting for a
 * CPU), beside a scenario: the machine's share of the delay.
 */
function idleControl(ctx) {
  const code = `const { monitorEventLoopDelay } = require('perf_hooks');
const fs = require('fs');
const file = '/proc/' + process.pid + '/task/' + process.pid + '/schedstat';
const read = () => { try { return fs.readFileSync(file, 'utf8').trim().split(/\\s+/).map(Number); } catch { return null; } };
const h = monitorEventLoopDelay({ resolution: 5 }); h.enable();
let lastT = performance.now(), lastS = read(), blocked = 0;
const keep = setInterval(() => {
  const t = performance.now(), st = read();
  if (st && lastS) blocked = Math.max(blocked, t - lastT - 2 - (st[0] - lastS[0]) / 1e6 - (st[1] - lastS[1]) / 1e6);
  lastT = t; lastS = st;
}, 2);
process.on('SIGTERM', () => { h.disable(); clearInterval(keep); process.stdout.write(JSON.stringify({ maxMs: h.max / 1e6, blockedMs: blocked }) + '\\n'); process.exit(0); });`;
  const child = spawn(process.execPath, ['-e', code], { env: childEnv(ctx), stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d) => { out += d; });
  const closed = new Promise((resolve) => child.on('close', resolve));
  return {
    async stop() {
      child.kill('SIGTERM');
      await closed;
      try { const r = JSON.parse(out.trim()); return { maxMs: round1(r.maxMs), blockedMs: round1(Math.max(0, r.blockedMs)) }; } catch { return null; }
    },
  };
}

function stallNote(s, idle, addonLoadMs, maxDelayMs) {
  if (!s || !s.available) return '';
  const saturated = maxDelayMs >= DELAY_BAR_MS && !delayProblem(maxDelayMs, s, idle)
    ? `; delay over ${DELAY_BAR_MS} ms not from work on the JS thread, with an idle process delayed too: machine saturated, not counted` : '';
  return `${saturated}; the addon's first load blocked the main thread ${addonLoadMs} ms once, before measuring; ` +
    `stalls > ${DELAY_BAR_MS} ms: ${s.count}, worst ${s.worstGapMs} ms = ${s.worstGapOnCpuMs} ms on a CPU + ${s.worstGapWaitMs} ms waiting for one + ` +
    `${s.worstGapBlockedMs} ms blocked; longest on-CPU part of any stall ${s.maxOnCpuMs} ms, longest blocked part ${s.maxBlockedMs} ms; ` +
    `an idle Node process beside it: max delay ${idle ? idle.maxMs : '?'} ms, longest blocked part ${idle ? idle.blockedMs : '?'} ms`;
}

/**
 * The event-loop bar: max delay < 20 ms. Over it, the delay still passes when an
 * idle process beside it was delayed past the bar too (the machine was
 * saturated) and no stall had 20 ms of work on the JS thread itself: the loop
 * was kept from a CPU, nothing ran on it too long. The "blocked" parts are
 * reported but not judged: on this VM an idle process and a process starting
 * empty workers show blocked parts of 50-450 ms too (guest descheduling).
 * Null when it passes.
 */
function delayProblem(maxDelayMs, s, idle) {
  if (maxDelayMs < DELAY_BAR_MS) return null;
  const saturated = idle && idle.maxMs >= DELAY_BAR_MS;
  if (s && s.available && saturated && s.maxOnCpuMs < DELAY_BAR_MS) return null;
  return `event-loop delay ${round1(maxDelayMs)} ms >= ${DELAY_BAR_MS}` +
    (s && s.available ? ` (longest on-CPU part of a stall ${s.maxOnCpuMs} ms, longest blocked part ${s.maxBlockedMs} ms, ` +
      `idle control ${idle ? `${idle.maxMs} ms, blocked ${idle.blockedMs} ms` : '?'})` : '');
}

function report(result) {
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

/** Ends a child's measured run: the event-loop delay and stalls, the time taken and the load, then the result line. */
function reportRun(out, delay, stalls, t0) {
  out.maxDelayMs = delay.stop();
  out.stalls = stalls.stop();
  out.ms = round1(performance.now() - t0);
  out.loadavg = os.loadavg()[0];
  report(out);
}

function crashNote(r) {
  if (r.timedOut) return 'child timed out (killed)';
  return `child died: code ${r.code} signal ${r.signal}${r.stderrTail ? `; stderr: ${r.stderrTail}` : ''}`;
}

// ------------------------------------- a. 1,000 forwards + fuse/save/clone/dispose

/** Loads the addon now (the library loads it at the first call), timed: a one-time, synchronous cost. */
function loadAddon(tf) {
  const t = performance.now();
  tf.getNumThreads();
  return round1(performance.now() - t);
}

async function childConcurrent(args) {
  const tf = require(args.dist);
  const addonLoadMs = loadAddon(tf);
  const f = fixture(args.root, 'resnet18_traced');
  const input = readFloat32(f.input);
  const expected = readFloat32(f.output);
  const N = args.forwards;
  const CHUNK = 50;
  const out = {
    forwards: N, correct: 0, wrong: 0, rejected: 0, worst: 0, rejections: [], inFlightAtDispose: null,
    settledWhenReleased: null, lateOps: {}, earlyOps: {}, afterDispose: {}, verify: {}, threads: tf.getNumThreads(), addonLoadMs,
  };
  const delay = loopDelay();
  const stalls = stallProbe();
  const t0 = performance.now();
  const m = await tf.load(f.model);
  const x = tf.Tensor.from(input, f.shape);
  let settled = 0;
  let released = null;
  const late = {};
  const earlyFile = path.join(args.dir, 'early.pt');
  const lateFile = path.join(args.dir, 'late.pt');
  const check = (values) => {
    const d = maxAbsDiff(values, expected);
    out.worst = Math.max(out.worst, d);
    if (d <= f.atol) out.correct++; else out.wrong++;
  };
  const outcome = (p) => p.then((v) => ({ ok: true, v }), (e) => ({ ok: false, code: e.code ?? e.name, message: String(e.message).slice(0, 200) }));

  const lateDone = {};
  let submitted = false;
  const startDispose = () => {
    // Work queued right before dispose(): it is in flight when dispose() is
    // called, so it must finish (README: "Calls already in flight still finish").
    late.fuse = m.fuse({ validate: { inputs: [f.shape] } });
    late.save = m.save(lateFile);
    late.clone = m.clone();
    for (const [k, p] of Object.entries(late)) {
      // Registered before dispose() registers its own wait, so these run first.
      lateDone[k] = false;
      p.then(() => { lateDone[k] = true; }, () => { lateDone[k] = true; });
      late[k] = outcome(p);
    }
    out.inFlightAtDispose = N - settled;
    released = m.dispose().then(() => {
      out.settledWhenReleased = settled;
      out.lateSettledWhenReleased = { ...lateDone };
    });
  };
  const onSettle = () => {
    settled++;
    if (settled >= Math.floor(N / 2) && submitted && !released) startDispose();
  };

  const forwards = [];
  const early = {};
  for (let i = 0; i < N; i += CHUNK) {
    for (let j = i; j < Math.min(N, i + CHUNK); j++) {
      const p = m.forward(x);
      p.then(onSettle, onSettle);  // counted on the call's own promise, before anything else waits on it
      forwards.push(p.then((y) => { check(valuesOf(tf, y)); }, (e) => {
        out.rejected++;
        if (out.rejections.length < 3) out.rejections.push(`${e.code}: ${String(e.message).slice(0, 120)}`);
      }));
    }
    if (i === 0) {
      // fuse, save and clone queued behind the first forwards, so they run among them.
      // fuse validates on a batch-8 ImageNet-size sample, as a user would.
      early.fuse = outcome(m.fuse({ validate: { inputs: [[8, 3, 224, 224]] } }));
      early.save = outcome(m.save(earlyFile));
      early.clone = outcome(m.clone());
    }
    await tick();  // submit in chunks: the submitting loop itself must not stall the event loop
  }
  submitted = true;
  if (settled >= Math.floor(N / 2) && !released) startDispose();
  out.submitMs = round1(performance.now() - t0);
  await Promise.all(forwards);
  if (!released) startDispose();
  await released;
  out.disposeWaited = out.settledWhenReleased === N && Object.values(out.lateSettledWhenReleased).every(Boolean);

  // Calls after dispose() reject with ERR_DISPOSED.
  for (const [k, call] of Object.entries({
    forward: () => m.forward(x), save: () => m.save(path.join(args.dir, 'after.pt')), clone: () => m.clone(),
    fuse: () => m.fuse(), run: () => m.run('forward', x),
  })) {
    const r = await outcome(Promise.resolve().then(call));
    out.afterDispose[k] = r.ok ? 'resolved' : r.code;
  }

  // The modules the concurrent work produced must compute the right thing.
  const verify = async (label, mod) => {
    const ys = await Promise.all(Array.from({ length: 5 }, () => mod.forward(x)));
    const d = Math.max(...ys.map((y) => maxAbsDiff(valuesOf(tf, y), expected)));
    out.verify[label] = d;
    return d <= f.atol;
  };
  const results = {};
  for (const [k, p] of Object.entries(early)) results[`early.${k}`] = await p;
  for (const [k, p] of Object.entries(late)) results[`late.${k}`] = await p;
  for (const [k, r] of Object.entries(results)) {
    const [when, op] = k.split('.');
    (when === 'early' ? out.earlyOps : out.lateOps)[op] = r.ok ? 'ok' : `${r.code}: ${r.message}`;
  }
  let badOps = 0;
  for (const [k, r] of Object.entries(results)) {
    if (!r.ok) { badOps++; continue; }
    const op = k.split('.')[1];
    let mod = null;
    if (op === 'fuse') mod = r.v.module;
    if (op === 'clone') mod = r.v;
    if (op === 'save') {
      try { mod = await tf.load(k === 'early.save' ? earlyFile : lateFile); } catch (e) { out.verify[k] = `reload failed: ${e.code}`; badOps++; continue; }
    }
    if (!(await verify(k, mod))) badOps++;
    await mod.dispose();
  }
  out.badOps = badOps;
  x.dispose();
  reportRun(out, delay, stalls, t0);
}

async function scenarioConcurrent(ctx) {
  const forwards = ctx.quick ? 200 : 1000;
  const dir = scratch(ctx, 'load-concurrent');
  ctx.log?.(`load: ${forwards} concurrent forwards on resnet18 + fuse/save/clone, dispose half-way (child process)`);
  const control = idleControl(ctx);
  const r = await runChild(ctx, 'concurrent', { root: ctx.root, dist: ctx.dist, dir, forwards }, ctx.quick ? 180_000 : 600_000);
  const idle = await control.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  const base = { scenario: '1,000 concurrent forwards + fuse/save/clone/dispose',
    load: `${forwards} forwards in flight on resnet18 (1x3x64x64) + fuse (validate 8x3x224x224)/save/clone, again at dispose() half-way` };
  if (!r.result || r.code !== 0) {
    return row({ ...base, crashes: 1, notes: crashNote(r) });
  }
  const o = r.result;
  const afterOk = Object.values(o.afterDispose).every((c) => c === 'ERR_DISPOSED');
  const problems = [];
  if (o.wrong || o.rejected) problems.push(`${o.wrong} wrong, ${o.rejected} rejected forwards${o.rejections.length ? ` (${o.rejections.join('; ')})` : ''}`);
  for (const [when, ops] of [['before', o.earlyOps], ['at dispose', o.lateOps]]) {
    for (const [op, s] of Object.entries(ops)) if (s !== 'ok') problems.push(`${op} started ${when}: ${s}`);
  }
  for (const [k, d] of Object.entries(o.verify)) if (typeof d !== 'number' || d > 1e-4) problems.push(`${k} result off by ${d}`);
  if (!o.disposeWaited) problems.push(`dispose() resolved with ${o.settledWhenReleased}/${o.forwards} forwards settled`);
  if (!afterOk) problems.push(`after dispose: ${JSON.stringify(o.afterDispose)}`);
  const delayIssue = delayProblem(o.maxDelayMs, o.stalls, idle);
  if (delayIssue) problems.push(delayIssue);
  return row({
    ...base,
    dataLost: o.wrong + o.rejected + o.badOps,
    maxDelayMs: round1(o.maxDelayMs),
    ok: problems.length === 0,
    notes: `${o.correct}/${o.forwards} forwards match PyTorch (max err ${o.worst.toExponential(2)}, atol 1e-4); ` +
      `${o.inFlightAtDispose} in flight at dispose(), all settled before it resolved: ${o.disposeWaited}; ` +
      `after dispose: ${afterOk ? 'all ERR_DISPOSED' : JSON.stringify(o.afterDispose)}; ` +
      `${(o.ms / 1000).toFixed(1)} s, ${o.threads} intra-op threads, load avg ${o.loadavg.toFixed(1)}` +
      stallNote(o.stalls, idle, o.addonLoadMs, o.maxDelayMs) + (problems.length ? `; PROBLEMS: ${problems.join('; ')}` : ''),
  });
}

// ------------------------------------------------------------ b. worker_threads

const WORKER_MODELS = ['convbn_scripted', 'convbn_traced', 'resnet18_traced', 'mobilenet_v2_traced'];

// Each worker runs scripts/stress/fuse-worker.js.
const WORKER_FILE = path.join(__dirname, 'fuse-worker.js');

/** Starts a worker on fixture `f`; `events` resolves on each stage and on exit. */
function startWorker(args, f, forwards) {
  const { Worker } = require('worker_threads');
  const w = new Worker(WORKER_FILE, { workerData: {
    dist: args.dist, model: f.model, input: f.input, output: f.output, shape: f.shape, forwards } });
  const state = { stage: 'starting', result: null, error: null, exitCode: null };
  const waiters = [];
  const notify = () => { for (const x of [...waiters]) if (x.test()) { waiters.splice(waiters.indexOf(x), 1); x.resolve(); } };
  w.on('message', (msg) => {
    state.stage = msg.stage;
    if (msg.stage === 'done') state.result = { ...msg, worst: Math.max(msg.plain, msg.fused) };
    if (msg.stage === 'error') state.error = `${msg.code}: ${msg.message}`;
    notify();
  });
  w.on('error', (e) => { state.error = `worker error: ${e.message}`; notify(); });
  const exited = new Promise((resolve) => w.on('exit', (code) => { state.exitCode = code; state.stage = 'exited'; notify(); resolve(code); }));
  const until = (stages) => new Promise((resolve) => {
    const x = { test: () => stages.includes(state.stage) || state.exitCode !== null, resolve };
    waiters.push(x);
    notify();
  });
  return { w, state, exited, until };
}

async function childWorkers(args) {
  const tf = require(args.dist);
  const addonLoadMs = loadAddon(tf);
  const random = rng(args.seed);
  const fixtures = WORKER_MODELS.map((n) => fixture(args.root, n));
  const out = { rounds: [], workers: 0, completed: 0, terminated: 0, wrong: 0, errors: [], mainForwards: 0, mainWrong: 0, worst: 0, addonLoadMs };
  const delay = loopDelay();
  const stalls = stallProbe();
  const t0 = performance.now();

  // The main thread keeps using the addon while workers come and go.
  const mainF = fixtures[0];
  const mainModel = await tf.load(mainF.model);
  const mainX = tf.Tensor.from(readFloat32(mainF.input), mainF.shape);
  const mainExpected = readFloat32(mainF.output);
  let active = true;
  const mainLoop = (async () => {
    while (active) {
      const d = maxAbsDiff(valuesOf(tf, await mainModel.forward(mainX)), mainExpected);
      out.mainForwards++;
      if (!(d <= mainF.atol)) out.mainWrong++;
      await sleep(5);
    }
  })();

  const plan = [];
  for (let i = 0; i < args.normalRounds; i++) plan.push('normal');
  for (let i = 0; i < args.terminateRounds; i++) plan.push('terminate');
  for (let r = 0; r < plan.length; r++) {
    const kind = plan[r];
    const workers = fixtures.map((f) => ({ f, ...startWorker(args, f, args.forwards) }));
    out.workers += workers.length;
    const info = { kind, terminatedAt: [] };
    if (kind === 'terminate') {
      // Two of the four are stopped mid-work: a small model once its fuse and
      // forwards are in flight, and a large one at a random time from its start
      // (loading the addon, the model, or fusing). The other two must finish correctly.
      const victims = [r % 2, 2 + (r % 2)];
      await Promise.all(victims.map(async (vi, k) => {
        const v = workers[vi];
        if (k === 0) { await v.until(['busy', 'done', 'error']); await sleep(Math.floor(random() * 5)); }
        else await sleep(Math.floor(random() * 600));
        info.terminatedAt.push(`${v.f.name}@${v.state.stage}`);
        if (v.state.exitCode === null) out.terminated++;
        await v.w.terminate();
      }));
      workers.forEach((w, i) => { w.victim = victims.includes(i); });
    }
    await Promise.all(workers.map((w) => w.exited));
    for (const w of workers) {
      if (w.victim) {
        // A terminated worker may still have finished first; then it must be right.
        if (w.state.result && !(w.state.result.worst <= Math.max(w.f.atol, 1e-4))) out.wrong++;
        continue;
      }
      const res = w.state.result;
      if (w.state.error || !res) { out.errors.push(`${w.f.name}: ${w.state.error || `exit ${w.state.exitCode} without a result`}`); continue; }
      if (w.state.exitCode !== 0) out.errors.push(`${w.f.name}: exit code ${w.state.exitCode}`);
      out.completed++;
      out.worst = Math.max(out.worst, res.worst);
      // The fused module's outputs are compared too: manifest atol, at least 1e-4 for the fold's rounding.
      if (!(res.worst <= Math.max(w.f.atol, 1e-4))) out.wrong++;
    }
    out.rounds.push(info);
    if (global.gc) global.gc();
  }
  active = false;
  await mainLoop;
  await mainModel.dispose();
  mainX.dispose();
  reportRun(out, delay, stalls, t0);
}

/** A process that starts 4 busy workers and exits under them (process.exit while native work is in flight). */
async function childExitMidWork(args) {
  const fixtures = WORKER_MODELS.map((n) => fixture(args.root, n));
  const workers = fixtures.map((f) => startWorker(args, f, args.forwards));
  await Promise.all(workers.map((w) => w.until(['busy', 'done', 'error'])));
  await sleep(args.waitMs);
  report({ stages: workers.map((w) => w.state.stage) });
  process.exit(0);
}

async function scenarioWorkers(ctx) {
  const normalRounds = ctx.quick ? 2 : 5;
  const terminateRounds = ctx.quick ? 2 : 5;
  const exits = ctx.quick ? 1 : 3;
  const forwards = ctx.quick ? 4 : 8;
  const random = rng(ctx.seed + 17);
  ctx.log?.(`load: 4 worker_threads x ${normalRounds + terminateRounds} rounds (${terminateRounds} with terminate()), ${exits} exits mid-work`);
  const base = { scenario: '4 worker_threads',
    load: `4 workers (convbn x2, resnet18, mobilenet_v2) load+fuse+${forwards * 2} forwards each, ${normalRounds} rounds; ` +
      `${terminateRounds} rounds terminating 2 mid-work; ${exits} process exits mid-work` };
  const control = idleControl(ctx);
  const r = await runChild(ctx, 'workers', { root: ctx.root, dist: ctx.dist, seed: ctx.seed, normalRounds, terminateRounds, forwards },
    ctx.quick ? 240_000 : 600_000);
  const idle = await control.stop();
  let crashes = 0;
  const notes = [];
  let o = null;
  if (!r.result || r.code !== 0) { crashes++; notes.push(crashNote(r)); } else o = r.result;
  let exitCrashes = 0;
  for (let i = 0; i < exits; i++) {
    const e = await runChild(ctx, 'exit-mid-work', { root: ctx.root, dist: ctx.dist, forwards, waitMs: Math.floor(random() * 30) }, 120_000);
    if (e.code !== 0 || e.signal || !e.result) { exitCrashes++; notes.push(`exit mid-work: ${crashNote(e)}`); }
  }
  crashes += exitCrashes;
  if (!o) return row({ ...base, faults: terminateRounds * 2 + exits, crashes, notes: notes.join('; ') });
  const problems = [...o.errors];
  if (o.wrong) problems.push(`${o.wrong} workers with wrong outputs`);
  if (o.mainWrong) problems.push(`${o.mainWrong} wrong main-thread forwards`);
  const delayIssue = delayProblem(o.maxDelayMs, o.stalls, idle);
  if (delayIssue) problems.push(`main thread: ${delayIssue}`);
  const stops = o.rounds.filter((x) => x.kind === 'terminate').map((x) => x.terminatedAt.join('+')).join(', ');
  return row({
    ...base,
    faults: o.terminated + exits,
    crashes,
    dataLost: o.wrong + o.mainWrong + o.errors.length,
    maxDelayMs: round1(o.maxDelayMs),
    ok: crashes === 0 && problems.length === 0,
    notes: `${o.completed} workers finished with PyTorch's outputs (max err ${o.worst.toExponential(2)}), ${o.terminated} terminated ` +
      `(${stops}); main thread ran ${o.mainForwards} forwards meanwhile; ${exits - exitCrashes}/${exits} process exits mid-work clean; ` +
      `${(o.ms / 1000).toFixed(1)} s, load avg ${o.loadavg.toFixed(1)}` + stallNote(o.stalls, idle, o.addonLoadMs, o.maxDelayMs) +
      (notes.length ? `; ${notes.join('; ')}` : '') + (problems.length ? `; PROBLEMS: ${problems.join('; ')}` : ''),
  });
}

// ------------------------------------------------------- c. bad arguments and tensors

const HUGE = [1, 3, 100000, 100000];  // 3e10 elements: 120 GB of float32 if anything tried to fill it

/**
 * PyTorch's outputs for inputs with NaN / +Inf / -Inf in them, from the real
 * thing (python3 + torch), or null when no PyTorch is there.
 */
function torchOutputs(f, inputs, dir) {
  const script = [
    'import sys, torch',
    'm = torch.jit.load(sys.argv[1]).eval()',
    "shape = [int(s) for s in sys.argv[2].split(',')]",
    'for name in sys.argv[3:]:',
    "    x = torch.frombuffer(bytearray(open(name + '.in', 'rb').read()), dtype=torch.float32).reshape(shape)",
    '    with torch.no_grad():',
    '        y = m(x)',
    "    open(name + '.out', 'wb').write(y.contiguous().numpy().tobytes())",
  ].join('\n');
  const names = Object.keys(inputs).map((k) => path.join(dir, k));
  Object.entries(inputs).forEach(([k, v]) => fs.writeFileSync(path.join(dir, `${k}.in`), Buffer.from(v.buffer, v.byteOffset, v.byteLength)));
  try {
    execFileSync(PYTHON, ['-c', script, f.model, f.shape.join(','), ...names], { stdio: 'pipe', timeout: 120_000 });
  } catch {
    return null;
  }
  return Object.fromEntries(Object.keys(inputs).map((k) => [k, readFloat32(path.join(dir, `${k}.out`))]));
}

/** Inputs with non-finite values: sample 0 or 1 of the fixture input gets a NaN / ±Inf at one place, or all 3e38. */
function nonFiniteInputs(f) {
  const base = readFloat32(f.input);
  const per = base.length / f.shape[0];
  const make = (edits) => { const x = base.slice(); for (const [i, v] of edits) x[i] = v; return x; };
  return {
    nan0: make([[7, NaN]]),
    posinf1: make([[per + 40, Infinity]]),
    neginf1: make([[per + 99, -Infinity]]),
    mixed: make([[3, NaN], [per + 5, Infinity], [per + 6, -Infinity]]),
    // finite but huge: the sums overflow inside the model, to -Inf and NaN (Inf - Inf) in PyTorch
    overflow1: (() => { const x = base.slice(); x.fill(3e38, per); return x; })(),
  };
}

/**
 * The table. expect: { throws: 'TypeError' | 'RangeError' (sync, code ERR_INVALID_ARG) } or
 * { rejects: CODE } or { resolves: (value) => problem | null }; msg: a RegExp the message must match.
 */
function badCases(e) {
  const { tf, m, f, dir } = e;
  const T = (shape, Ctor = Float32Array, o) => tf.Tensor.from(new Ctor(shape.reduce((a, b) => a * b, 1)), shape, o);
  const cudaMissing = !tf.cuda.isAvailable();
  const cases = [
    // wrong shapes
    ['forward: 5 channels where the conv wants 3', () => m.forward(T([2, 5, 16, 16])), { rejects: 'ERR_TORCH', msg: /channels/ }],
    ['forward: a 5-D input', () => m.forward(T([2, 3, 16, 16, 1])), { rejects: 'ERR_TORCH', msg: /3D \(unbatched\) or 4D \(batched\)/ }],
    ['forward: a 0-d input', () => m.forward(T([])), { rejects: 'ERR_TORCH', msg: /input of size: \[\]/ }],
    ['forward: spatial size 0', () => m.forward(T([2, 3, 0, 16])), { rejects: 'ERR_TORCH', msg: /Kernel size can't be greater/ }],
    // wrong dtypes
    ['forward: float64 into a float32 conv', () => m.forward(T([2, 3, 16, 16], Float64Array)), { rejects: 'ERR_TORCH', msg: /double/i }],
    ['forward: int64 into a float32 conv', () => m.forward(T([2, 3, 16, 16], BigInt64Array)), { rejects: 'ERR_TORCH', msg: /long/i }],
    ['forward: float16 into a float32 conv', () => m.forward(T([2, 3, 16, 16], Uint16Array, { dtype: 'float16' })), { rejects: 'ERR_TORCH', msg: /Half/ }],
    ['forward: bool into a float32 conv', () => m.forward(T([2, 3, 16, 16], Uint8Array, { dtype: 'bool' })), { rejects: 'ERR_TORCH', msg: /type/i }],
    // wrong number / kind of inputs
    ['forward: no input', () => m.forward(), { rejects: 'ERR_INVALID_ARG', msg: /argument 'x'/ }],
    ['forward: two inputs', () => m.forward(e.x, e.x), { rejects: 'ERR_INVALID_ARG', msg: /at most 1 inputs/ }],
    ['forward: a number', () => m.forward(42), { rejects: 'ERR_INVALID_ARG', msg: /Expected Tensor/ }],
    ['forward: a list of one tensor', () => m.forward([e.x]), { rejects: 'ERR_INVALID_ARG', msg: /Expected Tensor/ }],
    ['forward: a raw typed array', () => m.forward(new Float32Array(4)), { throws: 'TypeError', msg: /Tensor\.from/ }],
    ['run: method not a string', () => m.run(5), { throws: 'TypeError', msg: /method/ }],
    ['run: no such method', () => m.run('nope', e.x), { rejects: 'ERR_METHOD_NOT_FOUND', msg: /'nope'/ }],
    // devices
    ...(cudaMissing ? [
      ["tensor.to('cuda') without a GPU", () => e.x.to('cuda'), { rejects: 'ERR_DEVICE_UNAVAILABLE', msg: /cuda:0 is not available/ }],
      ["module.to('cuda:1') without a GPU", () => m.to('cuda:1'), { rejects: 'ERR_DEVICE_UNAVAILABLE', msg: /cuda:1/ }],
      ["load({ device: 'cuda' }) without a GPU", () => tf.load(f.model, { device: 'cuda' }), { rejects: 'ERR_DEVICE_UNAVAILABLE', msg: /cuda/ }],
    ] : []),
    ["tensor.to('gpu')", () => e.x.to('gpu'), { throws: 'RangeError', msg: /'gpu'/ }],
    ['module.to(0)', () => m.to(0), { throws: 'TypeError', msg: /device/ }],
    // load options and files
    ['load: verify not a boolean', () => tf.load(f.model, { verify: 'yes' }), { throws: 'TypeError', msg: /options\.verify/ }],
    ['load: isolate.timeoutMs < 0', () => tf.load(f.model, { isolate: { timeoutMs: -1 } }), { throws: 'RangeError', msg: /timeoutMs/ }],
    ['load: unknown option', () => tf.load(f.model, { bogus: 1 }), { throws: 'RangeError', msg: /bogus/ }],
    ['load: missing file', () => tf.load(path.join(dir, 'missing.pt')), { rejects: 'ERR_FILE_NOT_FOUND', msg: /missing\.pt/ }],
    ['load: random bytes', () => tf.load(f.bad.random_bytes), { rejects: 'ERR_NOT_TORCHSCRIPT', msg: /torch\.jit/ }],
    // fuse options
    ['fuse: unknown mode', () => m.fuse({ mode: 'melt' }), { throws: 'RangeError', msg: /options\.mode/ }],
    ['fuse: unknown key', () => m.fuse({ validat: {} }), { throws: 'RangeError', msg: /validat/ }],
    ['fuse: negative size in a sample shape', () => m.fuse({ validate: { inputs: [[1, -3]] } }), { throws: 'TypeError', msg: /validate\.inputs\[0\]/ }],
    ['fuse: atol NaN', () => m.fuse({ validate: { inputs: [f.shape], atol: NaN } }), { throws: 'RangeError', msg: /atol/ }],
    ['fuse: benchmark warmup -1', () => m.fuse({ benchmark: { inputs: [f.shape], warmup: -1 } }), { throws: 'RangeError', msg: /warmup/ }],
    ['fuse: optimize without inputs', () => m.fuse({ optimize: true }), { throws: 'TypeError', msg: /sample inputs/ }],
    ['fuse: dryRun (use inspect)', () => m.fuse({ dryRun: true }), { throws: 'TypeError', msg: /inspect/ }],
    ['fuse: benchmark seed not a number', () => m.fuse({ benchmark: { inputs: [f.shape], iterations: 1, warmup: 0, seed: 'x' } }),
      { throws: 'RangeError', msg: /seed/ }],
    ['fuse: validate shape that does not fit the model', () => m.fuse({ validate: { inputs: [[2, 5, 16, 16]] } }), { rejects: 'ERR_TORCH', msg: /channels/ }],
    ['fuse: validate with two inputs for a one-input forward', () => m.fuse({ validate: { inputs: [f.shape, f.shape] } }),
      { rejects: 'ERR_INVALID_ARG', msg: /at most 1 inputs/ }],
    ['fuse: a group that is not a pair', () => m.fuse({ modules: [['nope', 'bn']] }), { rejects: 'ERR_FUSE_GROUP', msg: /'nope'/ }],
    // huge sample shapes: must be refused before anything is allocated
    ['fuse: validate sample [1,3,100000,100000]', () => m.fuse({ validate: { inputs: [HUGE] } }), { throws: 'RangeError', msg: /inputs\[0\]/ }],
    ['fuse: benchmark sample [1,3,100000,100000]', () => m.fuse({ benchmark: { inputs: [HUGE] } }), { throws: 'RangeError', msg: /inputs\[0\]/ }],
    ['fuse: optimize sample [1,3,100000,100000]', () => m.fuse({ optimize: { inputs: [HUGE] } }), { throws: 'RangeError', msg: /inputs\[0\]/ }],
    ['toHalf: validate sample [1,3,100000,100000]', () => m.toHalf({ dtype: 'bfloat16', validate: { inputs: [HUGE] } }),
      { throws: 'RangeError', msg: /inputs\[0\]/ }],
    ['inspect: inputShapes [1,3,100000,100000] (symbolic, no allocation)', () => m.inspect({ inputShapes: [HUGE] }),
      { resolves: (r) => (r.graph.nodes.some((n) => n.outputs.some((o) => o.shape && o.shape.join(',') === '1,5')) ? null : 'no [1, 5] output shape') }],
    ['Tensor.from: 0 elements, sizes past int64', () => tf.Tensor.from(new Float32Array(0), [2 ** 53 - 1, 2 ** 53 - 1, 0]),
      { throws: 'RangeError', msg: /shape/ }],
    // save options
    ['save: options not an object', () => m.save(path.join(dir, 'a.pt'), 'x'), { throws: 'TypeError', msg: /options/ }],
    ['save: extra file name escaping', () => m.save(path.join(dir, 'a.pt'), { extraFiles: { '../x': 'a' } }), { throws: 'TypeError', msg: /extraFiles/ }],
    ['save: into a missing folder', () => m.save(path.join(dir, 'no', 'a.pt')), { rejects: 'ERR_FILE_NOT_FOUND', msg: /no such directory/ }],
    ['save: onto a folder', () => m.save(dir), { rejects: 'ERR_NOT_A_FILE', msg: /directory/ }],
    ['setNumThreads(0)', () => tf.setNumThreads(0), { throws: 'RangeError', msg: /threads/ }],
  ];
  // NaN / Inf inputs do not fail: the output is what PyTorch gives.
  for (const [k, values] of Object.entries(e.nonFinite)) {
    cases.push([`forward: input with ${k} (NaN/Inf propagate as in PyTorch)`, () => m.forward(tf.Tensor.from(values, f.shape)), {
      resolves: (y) => {
        const a = valuesOf(tf, y);
        if (!a) return 'not a tensor';
        const ref = e.torch ? e.torch[k] : null;
        if (ref) {
          const d = maxAbsDiff(a, ref);
          return d <= f.atol ? null : `differs from PyTorch (max abs diff ${d})`;
        }
        // Without PyTorch: at least the NaN must reach the sample it was put in.
        return a.some((v) => !Number.isFinite(v)) ? null : 'no non-finite value in the output';
      },
    }]);
  }
  return cases;
}

async function attempt(call) {
  let p;
  try { p = call(); } catch (err) { return { how: 'throw', err }; }
  if (!p || typeof p.then !== 'function') return { how: 'value', value: p };
  try { return { how: 'resolve', value: await p }; } catch (err) { return { how: 'reject', err }; }
}

function disposeValue(tf, v) {
  if (v instanceof tf.Tensor) { v.dispose(); return; }
  if (v && typeof v === 'object' && v.module && typeof v.module.dispose === 'function') v.module.dispose();
}

/** What went wrong with one call against its expectation, or null. */
function judge(tf, r, expect) {
  const desc = (err) => `${err && err.constructor ? err.constructor.name : typeof err} ${err && err.code}: ${String(err && err.message).split('\n').pop().slice(0, 160)}`;
  if (expect.throws) {
    if (r.how !== 'throw') return `expected a synchronous ${expect.throws} ERR_INVALID_ARG, got ${r.how}${r.err ? ` ${desc(r.err)}` : ''}`;
    if (r.err.constructor.name !== expect.throws || r.err.code !== 'ERR_INVALID_ARG') return `expected ${expect.throws} ERR_INVALID_ARG, got ${desc(r.err)}`;
    if (!expect.msg.test(r.err.message)) return `message does not match ${expect.msg}: ${desc(r.err)}`;
    return null;
  }
  if (expect.rejects) {
    if (r.how !== 'reject') return `expected a rejection ${expect.rejects}, got ${r.how}${r.err ? ` ${desc(r.err)}` : ''}`;
    if (!(r.err instanceof tf.TorchfoldError) || r.err.code !== expect.rejects) return `expected TorchfoldError ${expect.rejects}, got ${desc(r.err)}`;
    if (!expect.msg.test(r.err.message)) return `message does not match ${expect.msg}: ${desc(r.err)}`;
    if (/frame #\d/.test(r.err.message)) return 'message carries a C++ backtrace';
    return null;
  }
  if (r.how !== 'resolve' && r.how !== 'value') return `expected success, got ${r.how} ${desc(r.err)}`;
  return expect.resolves(r.value);
}

async function settleGc() {
  for (let i = 0; i < 3; i++) { if (global.gc) global.gc(); await tick(); }
}

async function childBadArgs(args) {
  const tf = require(args.dist);
  const f = fixture(args.root, 'convbn_scripted');
  const nonFinite = nonFiniteInputs(f);
  const torch = torchOutputs(f, nonFinite, args.dir);
  const m = await tf.load(f.model);
  const x = tf.Tensor.from(readFloat32(f.input), f.shape);
  const env = { tf, m, f, x, dir: args.dir, nonFinite, torch };
  const cases = badCases(env);
  const failures = new Map();  // case name -> first problem
  let calls = 0;
  const samples = [];
  const warm = Math.max(1, Math.floor(args.rounds * 0.2));
  let baseline = null;
  const t0 = performance.now();
  for (let round = 0; round < args.rounds; round++) {
    for (const [name, call, expect] of cases) {
      const r = await attempt(call);
      calls++;
      const problem = judge(tf, r, expect);
      if (problem && !failures.has(name)) failures.set(name, problem);
      if (r.how === 'resolve' || r.how === 'value') disposeValue(tf, r.value);
    }
    if (round + 1 === warm || round + 1 === args.rounds || (round + 1) % Math.max(1, Math.floor(args.rounds / 10)) === 0) {
      await settleGc();
      const now = rss();
      samples.push([round + 1, mb(now)]);
      if (round + 1 === warm) baseline = now;
    }
  }
  await settleGc();
  const end = rss();
  await m.dispose();
  x.dispose();
  report({
    cases: cases.length, rounds: args.rounds, calls, failures: [...failures.entries()],
    baselineMb: mb(baseline), endMb: mb(end), growthPct: pct(end, baseline), perRoundKb: Math.round((end - baseline) / 1024 / (args.rounds - warm || 1)),
    samples, torch: Boolean(torch), ms: round1(performance.now() - t0),
  });
}

async function scenarioBadArgs(ctx) {
  const rounds = ctx.quick ? 20 : 200;
  const dir = scratch(ctx, 'load-badargs');
  ctx.log?.(`load: bad arguments and tensors table x ${rounds} (child process)`);
  const r = await runChild(ctx, 'bad-args', { root: ctx.root, dist: ctx.dist, dir, rounds }, ctx.quick ? 240_000 : 900_000);
  fs.rmSync(dir, { recursive: true, force: true });
  const base = { scenario: 'bad arguments and tensors', load: `${rounds} rounds of the bad-call table on convbn_scripted` };
  if (!r.result || r.code !== 0) return row({ ...base, crashes: 1, notes: crashNote(r) });
  const o = r.result;
  const leak = o.growthPct !== null && o.growthPct >= 5;
  return row({
    ...base,
    load: `${rounds} rounds x ${o.cases} bad calls (${o.calls} calls) on convbn_scripted`,
    badInputs: o.calls,
    rssGrowthPct: o.growthPct === null ? null : round1(o.growthPct),
    ok: o.failures.length === 0 && !leak,
    notes: `${o.cases - o.failures.length}/${o.cases} cases give the expected error or result; ` +
      `RSS ${o.baselineMb} -> ${o.endMb} MB after warm-up (${o.perRoundKb} KB/round; samples ${o.samples.map((s) => `${s[0]}:${s[1]}`).join(' ')}); ` +
      `NaN/Inf checked against ${o.torch ? 'PyTorch' : 'NaN propagation only (no PyTorch)'}; ${(o.ms / 1000).toFixed(1)} s` +
      (o.failures.length ? `; MISMATCHES: ${o.failures.map(([n, p]) => `[${n}] ${p}`).join('; ')}` : ''),
  });
}

// -------------------------------------------------------------------- entry

async function run(ctx) {
  const c = { root: ROOT, seed: 1, quick: false, log: () => {}, ...ctx };
  c.dist = c.dist || path.join(c.root, 'dist');
  const ownTmp = !c.tmp;
  if (ownTmp) c.tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-load-'));
  // ctx.only ('concurrent', 'workers' or 'bad-args') runs one scenario, for checking one by hand.
  const want = (k) => !c.only || c.only === k;
  const rows = [];
  if (want('concurrent')) rows.push(await scenarioConcurrent(c));
  if (want('workers')) rows.push(await scenarioWorkers(c));
  if (want('bad-args')) rows.push(await scenarioBadArgs(c));
  if (ownTmp) fs.rmSync(c.tmp, { recursive: true, force: true });
  return rows;
}

module.exports = { name: 'load', run, maxAbsDiff, nonFiniteInputs, torchOutputs };

if (require.main === module && process.argv[2] === '--child') {
  const part = process.argv[3];
  const args = JSON.parse(process.argv[4]);
  const parts = { concurrent: childConcurrent, workers: childWorkers, 'exit-mid-work': childExitMidWork, 'bad-args': childBadArgs };
  parts[part](args).catch((e) => {
    process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
    process.exit(1);
  });
} else if (require.main === module) {
  // node scripts/stress/load.js [--quick] [--only concurrent|workers|bad-args]: this scenario module alone.
  const quick = process.argv.includes('--quick');
  const at = process.argv.indexOf('--only');
  const only = at > 0 ? process.argv[at + 1] : undefined;
  run({ quick, only, log: (l) => process.stderr.write(`${l}\n`) }).then((rows) => {
    for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
  });
}
