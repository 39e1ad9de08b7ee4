'use strict';
// Shared pieces of the stress scenarios (scripts/stress/*.js): each scenario
// module exports { name, run(ctx) } where run resolves to an array of rows:
//   { scenario, load, faults, badInputs, crashes, dataLost, rssGrowthPct, maxDelayMs, ok, notes }
// scenario   short name ("save killed (SIGKILL)")
// load       what was held, in words ("1000 forwards + fuse/save/clone")
// faults     faults injected (kills, disk full, terminations), 0 if none
// badInputs  bad files / arguments tried, 0 if none
// crashes    processes that died when they should not have (the parent, or a child outside a kill)
// dataLost   files left partial or wrong, results that differ from the expected values
// rssGrowthPct / maxDelayMs  null when not measured
// ok         the scenario's own pass/fail against the bar
// notes      one line: what was measured, numbers
// ctx: { root, dist, tmp, seed, quick, log(line) }
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');
const { monitorEventLoopDelay } = require('perf_hooks');

const ROOT = path.resolve(__dirname, '..', '..');

function row(fields) {
  return {
    scenario: '', load: '', faults: 0, badInputs: 0, crashes: 0, dataLost: 0,
    rssGrowthPct: null, maxDelayMs: null, ok: false, notes: '', ...fields,
  };
}

/** Resident set size in bytes (from /proc, cheaper and fresher than process.memoryUsage). */
function rss() {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return process.memoryUsage().rss;
}

/** Starts an event-loop delay histogram; stop() gives the max delay in ms. */
function loopDelay() {
  const h = monitorEventLoopDelay({ resolution: 5 });
  h.enable();
  return {
    stop() { h.disable(); return h.max / 1e6; },
    reset() { h.reset(); },
    maxMs() { return h.max / 1e6; },
  };
}

/** A fresh scratch folder under ctx.tmp. */
function scratch(ctx, name) {
  const dir = fs.mkdtempSync(path.join(ctx.tmp, `${name}-`));
  return dir;
}

/** A small deterministic PRNG (mulberry32) for kill times and inputs. */
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const pct = (after, before) => (before > 0 ? ((after - before) / before) * 100 : null);

/**
 * Runs `node ARGS` and resolves { out, code, signal, stdout, stderr } once it closes, where `out` is the
 * last stdout line that parses as a JSON object (null if none). `timeoutMs` kills it with SIGKILL.
 */
function runNodeChild(args, { env = process.env, timeoutMs } = {}) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = timeoutMs ? setTimeout(() => child.kill('SIGKILL'), timeoutMs) : null;
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const line = stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
      let out = null;
      try { out = line ? JSON.parse(line) : null; } catch { /* the caller reports a missing result */ }
      resolve({ out, code, signal, stdout, stderr });
    });
  });
}

module.exports = { ROOT, row, rss, loopDelay, scratch, rng, pct, runNodeChild };
