#!/usr/bin/env node
// @ts-check
/**
 * Load test for server.mjs: the model fused against the model as loaded (--no-fuse), same input, same load.
 *
 * Starts both servers as child processes, computes the expected output in this process with torchfold (the model
 * as loaded), then drives each server with autocannon at a fixed number of connections. Rounds alternate
 * (fused, unfused, unfused, fused, ...) so a noisy machine drifting between fast and slow phases hits both alike.
 * Every 200 answer is checked against the expected output. At the end both servers get SIGTERM and must exit 0.
 *
 *   node examples/service/loadtest.mjs --connections 4 --duration 10
 *   node examples/service/loadtest.mjs --model m.pt --shape 1,3,224,224 --json results.json
 *
 * Exit status: 0 when every request succeeded with a correct output and both servers shut down cleanly, else 1
 * (2 for bad flags).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { load, Tensor } from 'torchfold';

const SERVER = fileURLToPath(new URL('./server.mjs', import.meta.url));
const require = createRequire(import.meta.url);
/** autocannon is CommonJS without bundled types: its programmatic API is documented in its README. */
const autocannon = /** @type {(opts: object) => any} */ (require(/** @type {string} */ ('autocannon')));
const DEMO_MODEL = path.join(path.dirname(require.resolve('torchfold/package.json')), 'models', 'demo.pt');

const USAGE = `Usage: node loadtest.mjs [options]

  --model PATH         TorchScript file (default: torchfold's models/demo.pt)
  --shape 1,3,64,64    input shape (required with --model; default 1,3,64,64 for the demo)
  --connections N      concurrent connections, each sending one request at a time (default 4)
  --duration S         measured seconds per variant, split over the rounds (default 10)
  --rounds N           alternating rounds per variant (default 2)
  --warmup S           unmeasured seconds per variant before the rounds (default 1)
  --format F           request body: binary (default; raw float32 + X-Shape) or json
  --atol X, --rtol X   tolerance of each answer against the model as loaded (defaults 1e-4, 1e-3)
  --server-arg ARG     extra flag for both servers, repeatable (e.g. --server-arg=--concurrency=2)
  --json FILE          also write the results as JSON ('-' for stdout, then the table goes to stderr)
  -h, --help           this text
`;

/** @param {string} msg */
function fail(msg) {
  process.stderr.write(`loadtest: ${msg}\n\n${USAGE}`);
  process.exit(2);
}

/**
 * @param {string | undefined} raw
 * @param {string} name
 * @param {number} fallback
 * @param {boolean} [integer]
 */
function num(raw, name, fallback, integer = false) {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) fail(`expected ${name} to be ${integer ? 'an integer' : 'a number'} >= 0, got '${raw}'`);
  return n;
}

let args;
try {
  args = parseArgs({
    options: {
      model: { type: 'string' }, shape: { type: 'string' }, connections: { type: 'string' }, duration: { type: 'string' },
      rounds: { type: 'string' }, warmup: { type: 'string' }, format: { type: 'string' }, atol: { type: 'string' },
      rtol: { type: 'string' }, 'server-arg': { type: 'string', multiple: true }, json: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
} catch (e) {
  fail(/** @type {Error} */ (e).message);
  throw e;
}
if (args.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const model = path.resolve(args.model ?? DEMO_MODEL);
if (args.model && !args.shape && model !== DEMO_MODEL) fail('--shape is required with --model');
const shape = (args.shape ?? '1,3,64,64').split(',').map((s) => Number(s.trim()));
if (!shape.every((d) => Number.isSafeInteger(d) && d >= 1)) fail(`expected --shape to be positive integers separated by commas, got '${args.shape}'`);
const connections = num(args.connections, '--connections', 4, true);
const duration = num(args.duration, '--duration', 10);
const rounds = num(args.rounds, '--rounds', 2, true);
const warmup = num(args.warmup, '--warmup', 1);
const atol = num(args.atol, '--atol', 1e-4);
const rtol = num(args.rtol, '--rtol', 1e-3);
const format = args.format ?? 'binary';
if (format !== 'binary' && format !== 'json') fail(`expected --format to be binary or json, got '${format}'`);
if (connections < 1 || rounds < 1 || duration <= 0) fail('--connections and --rounds must be >= 1, --duration > 0');
const serverArgs = args['server-arg'] ?? [];
const jsonOut = args.json;
/** Where the human-readable output goes: stderr when the JSON takes stdout. */
const out = jsonOut === '-' ? process.stderr : process.stdout;
/** @param {string} s */
const say = (s) => out.write(`${s}\n`);

// ---------------------------------------------------------------------------------------------------------------------

/** Seeded uniform values in [-1, 1) (mulberry32), so every run sends the same input. @param {number} n */
function seededInput(n, seed = 1) {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t ^= t + Math.imul(t ^ (t >>> 7), 61 | t);
    a[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
  return a;
}

/**
 * @typedef {object} Server
 * @property {string} name
 * @property {import('node:child_process').ChildProcess} child
 * @property {number} port
 * @property {Record<string, any>[]} logs
 * @property {Promise<{ code: number | null, signal: string | null }>} exited
 * @property {() => string} stderr
 */

/**
 * Starts server.mjs and resolves once it logs "ready".
 * @param {string} name
 * @param {string[]} extra
 * @returns {Promise<Server>}
 */
function startServer(name, extra) {
  const argv = [SERVER, '--port', '0', '--model', model, '--input-shape', shape.join(','), ...extra, ...serverArgs];
  const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  /** @type {Record<string, any>[]} */
  const logs = [];
  let stderr = '';
  let buffered = '';
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    /** @param {string} line */
    const onLine = (line) => {
      if (!line.trim()) return;
      let entry;
      try { entry = JSON.parse(line); } catch { entry = { msg: line }; }
      logs.push(entry);
      if (entry.msg === 'ready') resolve({ name, child, port: entry.port, logs, exited, stderr: () => stderr });
    };
    child.stdout.setEncoding('utf8').on('data', (/** @type {string} */ s) => {
      buffered += s;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      lines.forEach(onLine);
    });
    child.stderr.setEncoding('utf8').on('data', (/** @type {string} */ s) => {
      stderr += s;
      s.split('\n').forEach((line) => { if (line.trim().startsWith('{')) { try { logs.push(JSON.parse(line)); } catch { /* partial line */ } } });
    });
    child.on('error', reject);
    void exited.then(({ code, signal }) => reject(new Error(`the ${name} server exited (${code ?? signal}) before it was ready:\n${stderr}`)));
  });
}

/**
 * Checks one JSON answer against the expected output.
 * @param {string} body
 * @param {Float32Array} expected
 * @returns {{ ok: boolean, maxAbsDiff: number, why?: string }}
 */
function check(body, expected) {
  let answer;
  try { answer = JSON.parse(body); } catch { return { ok: false, maxAbsDiff: Infinity, why: 'not JSON' }; }
  if (!Array.isArray(answer?.data) || answer.data.length !== expected.length) {
    return { ok: false, maxAbsDiff: Infinity, why: `expected ${expected.length} values, got ${body.slice(0, 80)}` };
  }
  let worst = 0;
  let ok = true;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(answer.data[i] - expected[i]);
    if (!(d <= atol + rtol * Math.abs(expected[i]))) ok = false;
    worst = Math.max(worst, Number.isNaN(d) ? Infinity : d);
  }
  return { ok, maxAbsDiff: worst, ...(ok ? {} : { why: `max abs diff ${worst}` }) };
}

/** @param {number[]} sorted @param {number} p */
const percentile = (sorted, p) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] : NaN);

/**
 * @typedef {object} Tally
 * @property {number[]} latencies  ms of every 2xx answer
 * @property {number} seconds
 * @property {number[]} roundRps  successful answers per second in each measured round
 * @property {number} requests
 * @property {number} ok
 * @property {number} non2xx
 * @property {number} errors
 * @property {number} timeouts
 * @property {number} wrong
 * @property {number} maxAbsDiff
 * @property {Record<string, number>} statuses
 * @property {Map<string, number>} samples  distinct failures (the first few) and how often each came
 */

/** @returns {Tally} */
const newTally = () => ({ latencies: [], seconds: 0, roundRps: [], requests: 0, ok: 0, non2xx: 0, errors: 0, timeouts: 0, wrong: 0, maxAbsDiff: 0, statuses: {}, samples: new Map() });

/** @param {Tally} t @param {string} what */
function note(t, what) {
  if (t.samples.has(what) || t.samples.size < 5) t.samples.set(what, (t.samples.get(what) ?? 0) + 1);
}

/**
 * One autocannon run against one server.
 * @param {Server} server
 * @param {number} seconds
 * @param {Buffer} body
 * @param {Record<string, string>} headers
 * @param {Float32Array} expected
 * @param {Tally | null} tally  null for a warm-up
 */
async function drive(server, seconds, body, headers, expected, tally) {
  const t = tally ?? newTally();
  const instance = autocannon({
    url: `http://127.0.0.1:${server.port}`,
    connections,
    duration: seconds,
    timeout: 30,
    requests: [{
      method: 'POST',
      path: '/predict',
      headers,
      body,
      onResponse: (/** @type {number} */ status, /** @type {string} */ text) => {
        t.statuses[status] = (t.statuses[status] ?? 0) + 1;
        if (status !== 200) {
          note(t, `${status} ${text.slice(0, 200)}`);
          return;
        }
        const r = check(text, expected);
        t.maxAbsDiff = Math.max(t.maxAbsDiff, r.maxAbsDiff);
        if (!r.ok) {
          t.wrong++;
          note(t, `wrong output: ${r.why}`);
        }
      },
    }],
  });
  instance.on('response', (/** @type {unknown} */ _client, /** @type {number} */ status, /** @type {number} */ _bytes, /** @type {number} */ ms) => {
    if (status >= 200 && status < 300) t.latencies.push(ms);
  });
  const result = await instance;
  t.seconds += result.duration;
  t.roundRps.push(result['2xx'] / result.duration);
  t.requests += result.requests.total;
  t.ok += result['2xx'];
  t.non2xx += result.non2xx;
  t.errors += result.errors;
  t.timeouts += result.timeouts;
}

/**
 * SIGTERM, then waits for the exit.
 * @param {Server} server
 */
async function stop(server) {
  server.child.kill('SIGTERM');
  /** @type {NodeJS.Timeout | undefined} */
  let timer;
  const res = await Promise.race([server.exited, new Promise((resolve) => { timer = setTimeout(() => resolve(null), 30_000); })]);
  clearTimeout(timer);
  if (!res) {
    server.child.kill('SIGKILL');
    return { code: null, signal: 'timeout', disposed: false };
  }
  const { code, signal } = /** @type {{ code: number | null, signal: string | null }} */ (res);
  return { code, signal, disposed: server.logs.some((l) => l.msg === 'model disposed') };
}

// ---------------------------------------------------------------------------------------------------------------------

const n = shape.reduce((a, b) => a * b, 1);
const input = seededInput(n);
/** @type {Record<string, string>} */
const headers = format === 'binary'
  ? { 'Content-Type': 'application/octet-stream', 'X-Shape': shape.join(','), Accept: 'application/json' }
  : { 'Content-Type': 'application/json', Accept: 'application/json' };
const body = format === 'binary'
  ? Buffer.from(input.buffer, input.byteOffset, input.byteLength)
  : Buffer.from(JSON.stringify({ shape, data: Array.from(input) }));

// The expected answer, computed here with the model as loaded: no server involved.
const reference = await load(model);
const x = Tensor.from(input, shape);
const y = await reference.forward(x);
if (!(y instanceof Tensor)) throw new Error('The model does not return a single tensor');
const expected = /** @type {Float32Array} */ (y.toValues());  // values: float16/bfloat16 decoded, as the JSON answers carry them
x.dispose();
y.dispose();
await reference.dispose();

say(`loadtest: ${path.basename(model)} [${shape.join(', ')}], ${format} requests, ${connections} connections, ` +
  `${duration} s per variant in ${rounds} round(s), ${warmup} s warm-up; ${os.cpus().length} CPUs, load average ${os.loadavg()[0].toFixed(2)}`);

/** @type {Server[]} */
let servers = [];
try {
  servers = await Promise.all([startServer('fused', []), startServer('unfused', ['--no-fuse'])]);
} catch (e) {
  for (const s of servers) s.child.kill('SIGKILL');
  process.stderr.write(`loadtest: ${/** @type {Error} */ (e).message}\n`);
  process.exit(1);
}
const [fused, unfused] = servers;
const fuseLog = fused.logs.find((l) => l.msg === 'fused');
if (fuseLog) {
  say(`fused server: ${fuseLog.folded} pairs folded, ${fuseLog.skipped} skipped, validation max abs error ${fuseLog.validation?.maxAbsError}`);
}

/** @type {Map<string, Tally>} */
const tallies = new Map([['fused', newTally()], ['unfused', newTally()]]);
if (warmup > 0) {
  for (const s of servers) await drive(s, warmup, body, headers, expected, null);
}
for (let r = 0; r < rounds; r++) {
  const order = r % 2 === 0 ? [fused, unfused] : [unfused, fused];
  for (const s of order) {
    await drive(s, duration / rounds, body, headers, expected, /** @type {Tally} */ (tallies.get(s.name)));
  }
}
const exits = { fused: await stop(fused), unfused: await stop(unfused) };

// ---------------------------------------------------------------------------------------------------------------------

const rows = [...tallies].map(([name, t]) => {
  const lat = [...t.latencies].sort((a, b) => a - b);
  const exit = exits[/** @type {'fused' | 'unfused'} */ (name)];
  return {
    variant: name,
    requests: t.requests,
    ok: t.ok,
    rps: t.ok / t.seconds,
    latencyMs: { p50: percentile(lat, 0.5), p90: percentile(lat, 0.9), p99: percentile(lat, 0.99), max: lat.length ? lat[lat.length - 1] : NaN },
    errors: t.errors,
    timeouts: t.timeouts,
    non2xx: t.non2xx,
    wrongOutputs: t.wrong,
    maxAbsDiff: t.maxAbsDiff,
    statuses: t.statuses,
    failures: [...t.samples].map(([what, count]) => `${count}× ${what}`),
    seconds: t.seconds,
    roundRps: t.roundRps,
    exit: { code: exit.code, signal: exit.signal, modelDisposed: exit.disposed },
  };
});
const [f, u] = rows;
/** @param {number[]} xs */
const median = (xs) => { const v = [...xs].sort((a, b) => a - b); return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2; };
const ratio = {
  rps: f.rps / u.rps,
  /** The median over rounds of fused/unfused throughput, pairing the two runs of a round (adjacent in time). */
  rpsPaired: median(f.roundRps.map((x, i) => x / u.roundRps[i])),
  p50: f.latencyMs.p50 / u.latencyMs.p50,
  p99: f.latencyMs.p99 / u.latencyMs.p99,
};
const problems = [];
for (const row of rows) {
  if (row.ok === 0) problems.push(`${row.variant}: no successful request`);
  if (row.errors || row.timeouts) problems.push(`${row.variant}: ${row.errors} connection errors (${row.timeouts} timeouts)`);
  if (row.non2xx) problems.push(`${row.variant}: ${row.non2xx} non-2xx answers ${JSON.stringify(row.statuses)}: ${row.failures.join(' | ')}`);
  if (row.wrongOutputs) problems.push(`${row.variant}: ${row.wrongOutputs} wrong outputs (${row.failures.join(' | ')})`);
  if (row.exit.code !== 0) problems.push(`${row.variant}: server exited with ${row.exit.code ?? row.exit.signal} after SIGTERM`);
  if (!row.exit.modelDisposed) problems.push(`${row.variant}: server did not log "model disposed"`);
}

const fmt = (/** @type {number} */ v, d = 1) => (Number.isFinite(v) ? v.toFixed(d) : '-');
const table = [
  ['variant', 'ok req/s', 'p50 ms', 'p99 ms', 'requests', 'errors', 'non-2xx', 'wrong', 'max |diff|', 'exit', 'req/s by round'],
  ...rows.map((r) => [r.variant, fmt(r.rps), fmt(r.latencyMs.p50, 2), fmt(r.latencyMs.p99, 2), String(r.requests),
    String(r.errors), String(r.non2xx), String(r.wrongOutputs), r.maxAbsDiff.toExponential(1), String(r.exit.code ?? r.exit.signal),
    r.roundRps.map((x) => x.toFixed(0)).join(' ')]),
  ['fused/unfused', fmt(ratio.rps, 3), fmt(ratio.p50, 3), fmt(ratio.p99, 3), '', '', '', '', '', '', `paired median ${fmt(ratio.rpsPaired, 3)}`],
];
const widths = table[0].map((_, i) => Math.max(...table.map((row) => row[i].length)));
say('');
for (const [i, row] of table.entries()) {
  say(row.map((c, j) => (j === 0 || j === row.length - 1 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join('  ').trimEnd());
  if (i === 0 || i === table.length - 2) say(widths.map((w) => '-'.repeat(w)).join('  '));
}
say('');
say(problems.length ? `FAILED:\n  ${problems.join('\n  ')}` : 'OK: every answer matched the model as loaded; both servers exited 0 after SIGTERM');

if (jsonOut) {
  const result = {
    command: `node ${path.relative(process.cwd(), fileURLToPath(import.meta.url))} ${process.argv.slice(2).join(' ')}`.trim(),
    model, shape, format, connections, durationSeconds: duration, rounds, warmupSeconds: warmup, atol, rtol, serverArgs,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, node: process.version, loadAverage: os.loadavg() },
    fuse: fuseLog ? { folded: fuseLog.folded, skipped: fuseLog.skipped, validation: fuseLog.validation, timingsMs: fuseLog.timingsMs } : null,
    variants: rows,
    ratio,
    ok: problems.length === 0,
    problems,
  };
  const text = `${JSON.stringify(result, null, 2)}\n`;
  if (jsonOut === '-') process.stdout.write(text);
  else fs.writeFileSync(jsonOut, text);
}
process.exitCode = problems.length ? 1 : 0;
