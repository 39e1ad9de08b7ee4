#!/usr/bin/env node
// @ts-check
/**
 * An HTTP inference service over torchfold: it loads a TorchScript model, folds its
 * conv → BatchNorm pairs (validated against the model as loaded), and serves
 * forward() over plain `node:http`, with Prometheus metrics and a graceful shutdown.
 *
 *   node examples/service/server.mjs                        # the built-in demo model on :8080
 *   node examples/service/server.mjs --model m.pt --input-shape 1,3,224,224 --port 0
 *   node examples/service/server.mjs --help
 *
 * Endpoints: POST /predict, GET /healthz, GET /metrics, GET /report. See README.md beside this file.
 * Logs are JSON lines: info and debug on stdout, warn and error on stderr.
 */
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import { parseArgs } from 'node:util';
import client from 'prom-client';
import { load, setNumThreads, getNumThreads, Tensor, TorchfoldError, versions } from 'torchfold';

/** @typedef {import('torchfold').ScriptModule} ScriptModule */
/** @typedef {import('torchfold').FuseReport} FuseReport */
/** @typedef {import('torchfold').TorchValue} TorchValue */

// ---------------------------------------------------------------------------------------------------------------------
// Configuration: flags win over environment variables, which win over defaults.
// ---------------------------------------------------------------------------------------------------------------------

const require = createRequire(import.meta.url);
const PACKAGE_ROOT = path.dirname(require.resolve('torchfold/package.json'));
const DEMO_MODEL = path.join(PACKAGE_ROOT, 'models', 'demo.pt');
const DEMO_SHAPE = [1, 3, 64, 64];

const USAGE = `Usage: node server.mjs [options]

  --model PATH              TorchScript file (env MODEL_PATH; default: torchfold's models/demo.pt)
  --input-shape 1,3,64,64   sample input shape: fuse validation runs on it, and requests must match it
                            except in the first (batch) dimension (env INPUT_SHAPE; required with --model,
                            default 1,3,64,64 for the demo model)
  --max-batch N             largest first dimension a request may have (env MAX_BATCH; default 32)
  --no-shape-check          pass any shape to the model and let it decide (env SHAPE_CHECK=0)
  --no-fuse                 serve the model as loaded (env FUSE=0)
  --atol X, --rtol X        fuse validation tolerances (env FUSE_ATOL, FUSE_RTOL; defaults 1e-4, 1e-3)
  --on-failure MODE         pairs that move outputs past the tolerance: unfold (default) | throw (refuse to
                            start) | report (env FUSE_ON_FAILURE)
  --bench N                 also time the model before/after fusing, N rounds (env FUSE_BENCH; default 0: off)
  --threads N               libtorch intra-op threads (env TORCHFOLD_NUM_THREADS; default: torchfold's)
  --host HOST               address to listen on (env HOST; default 127.0.0.1; 0.0.0.0 in a container)
  --port N                  port; 0 picks a free one (env PORT; default 8080)
  --concurrency N           forwards running at once (env CONCURRENCY; default 2: one runs while the
                            next request is parsed and the last answer written)
  --max-queue N             requests waiting for a forward before 503 (env MAX_QUEUE; default 64)
  --max-body-bytes N        largest request body, else 413 (env MAX_BODY_BYTES; default 16777216)
  --drain-delay-ms N        on SIGTERM, keep serving this long with /healthz at 503 before closing the
                            listener, so a load balancer can notice (env DRAIN_DELAY_MS; default 0)
  --shutdown-timeout-ms N   longest wait for in-flight requests on shutdown (env SHUTDOWN_TIMEOUT_MS;
                            default 10000)
  --log-level LEVEL         debug | info | warn | error (env LOG_LEVEL; default info; debug logs every request)
  -h, --help                this text
`;

/**
 * @typedef {object} Config
 * @property {string} model
 * @property {number[]} shape
 * @property {number} maxBatch
 * @property {boolean} shapeCheck
 * @property {boolean} fuse
 * @property {number} atol
 * @property {number} rtol
 * @property {'unfold' | 'throw' | 'report'} onFailure
 * @property {number} bench
 * @property {number | undefined} threads
 * @property {string} host
 * @property {number} port
 * @property {number} concurrency
 * @property {number} maxQueue
 * @property {number} maxBodyBytes
 * @property {number} drainDelayMs
 * @property {number} shutdownTimeoutMs
 * @property {'debug' | 'info' | 'warn' | 'error'} logLevel
 */

class ConfigError extends Error {}

/**
 * @param {string | undefined} raw
 * @param {string} name
 * @param {number} min
 * @param {number} max
 * @param {number | undefined} fallback
 */
function intOption(raw, name, min, max, fallback) {
  if (raw === undefined || raw === '') {
    if (fallback === undefined) throw new ConfigError(`${name} is required`);
    return fallback;
  }
  const n = Number(raw);
  if (!/^\s*-?\d+\s*$/.test(raw) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(`Expected ${name} to be an integer from ${min} to ${max}, got '${raw}'`);
  }
  return n;
}

/**
 * @param {string | undefined} raw
 * @param {string} name
 * @param {number} fallback
 */
function numberOption(raw, name, fallback) {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new ConfigError(`Expected ${name} to be a number >= 0, got '${raw}'`);
  return n;
}

/**
 * "1,3,64,64" (or "1x3x64x64") → [1, 3, 64, 64].
 * @param {string} raw
 * @param {string} name
 */
function shapeOption(raw, name) {
  const parts = raw.split(/[,x]/).map((s) => s.trim());
  const dims = parts.map(Number);
  if (parts.length === 0 || parts.length > 8 || dims.some((d, i) => !/^\d+$/.test(parts[i]) || !Number.isSafeInteger(d) || d < 1)) {
    throw new ConfigError(`Expected ${name} to be 1 to 8 positive integers separated by commas (e.g. 1,3,64,64), got '${raw}'`);
  }
  return dims;
}

/**
 * @param {string | undefined} raw
 * @param {string} name
 */
function boolEnv(raw, name) {
  if (raw === undefined || raw === '') return undefined;
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new ConfigError(`Expected ${name} to be 1/0 or true/false, got '${raw}'`);
}

/**
 * @param {string[]} argv
 * @param {NodeJS.ProcessEnv} env
 * @returns {Config | null} null when --help was asked for
 */
function parseConfig(argv, env) {
  /** @type {ReturnType<typeof parseArgs>['values']} */
  let v;
  try {
    ({ values: v } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: 'string' }, 'input-shape': { type: 'string' }, 'max-batch': { type: 'string' },
        'no-shape-check': { type: 'boolean' }, 'no-fuse': { type: 'boolean' }, atol: { type: 'string' },
        rtol: { type: 'string' }, 'on-failure': { type: 'string' }, bench: { type: 'string' }, threads: { type: 'string' },
        host: { type: 'string' }, port: { type: 'string' }, concurrency: { type: 'string' }, 'max-queue': { type: 'string' },
        'max-body-bytes': { type: 'string' }, 'drain-delay-ms': { type: 'string' },
        'shutdown-timeout-ms': { type: 'string' }, 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new ConfigError(/** @type {Error} */ (e).message);
  }
  if (v.help) return null;
  /** @param {string} flag @param {string} name */
  const str = (flag, name) => /** @type {string | undefined} */ (v[flag]) ?? env[name];

  const modelArg = str('model', 'MODEL_PATH');
  const model = path.resolve(modelArg ?? DEMO_MODEL);
  const shapeArg = str('input-shape', 'INPUT_SHAPE');
  let shape;
  if (shapeArg !== undefined) shape = shapeOption(shapeArg, '--input-shape');
  else if (model === DEMO_MODEL) shape = DEMO_SHAPE;
  else throw new ConfigError('--input-shape (or INPUT_SHAPE) is required with --model: the shape of one request, e.g. 1,3,224,224');

  const onFailure = str('on-failure', 'FUSE_ON_FAILURE') ?? 'unfold';
  if (onFailure !== 'unfold' && onFailure !== 'throw' && onFailure !== 'report') {
    throw new ConfigError(`Expected --on-failure to be unfold, throw or report, got '${onFailure}'`);
  }
  const logLevel = str('log-level', 'LOG_LEVEL') ?? 'info';
  if (logLevel !== 'debug' && logLevel !== 'info' && logLevel !== 'warn' && logLevel !== 'error') {
    throw new ConfigError(`Expected --log-level to be debug, info, warn or error, got '${logLevel}'`);
  }
  const threadsArg = str('threads', 'TORCHFOLD_NUM_THREADS');
  return {
    model,
    shape,
    maxBatch: intOption(str('max-batch', 'MAX_BATCH'), '--max-batch', 1, 1 << 20, Math.max(32, shape[0])),
    shapeCheck: v['no-shape-check'] ? false : boolEnv(env.SHAPE_CHECK, 'SHAPE_CHECK') ?? true,
    fuse: v['no-fuse'] ? false : boolEnv(env.FUSE, 'FUSE') ?? true,
    atol: numberOption(str('atol', 'FUSE_ATOL'), '--atol', 1e-4),
    rtol: numberOption(str('rtol', 'FUSE_RTOL'), '--rtol', 1e-3),
    onFailure,
    bench: intOption(str('bench', 'FUSE_BENCH'), '--bench', 0, 100000, 0),
    threads: threadsArg === undefined ? undefined : intOption(threadsArg, '--threads', 1, 1024, undefined),
    host: str('host', 'HOST') ?? '127.0.0.1',
    port: intOption(str('port', 'PORT'), '--port', 0, 65535, 8080),
    concurrency: intOption(str('concurrency', 'CONCURRENCY'), '--concurrency', 1, 1024, 2),
    maxQueue: intOption(str('max-queue', 'MAX_QUEUE'), '--max-queue', 0, 1 << 20, 64),
    maxBodyBytes: intOption(str('max-body-bytes', 'MAX_BODY_BYTES'), '--max-body-bytes', 1, 2 ** 31 - 1, 16 * 1024 * 1024),
    drainDelayMs: intOption(str('drain-delay-ms', 'DRAIN_DELAY_MS'), '--drain-delay-ms', 0, 3_600_000, 0),
    shutdownTimeoutMs: intOption(str('shutdown-timeout-ms', 'SHUTDOWN_TIMEOUT_MS'), '--shutdown-timeout-ms', 0, 3_600_000, 10_000),
    logLevel,
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// Logging: one JSON object per line.
// ---------------------------------------------------------------------------------------------------------------------

const LEVELS = { debug: 10, info: 20, warn: 30, error: 40 };
let minLevel = LEVELS.info;

/**
 * @param {keyof typeof LEVELS} level
 * @param {string} msg
 * @param {Record<string, unknown>} [fields]
 */
function log(level, msg, fields = {}) {
  if (LEVELS[level] < minLevel) return;
  const line = JSON.stringify({ time: new Date().toISOString(), level, pid: process.pid, msg, ...fields }) + '\n';
  // Pipes and files are written synchronously on Linux, so a line logged right before exit is not lost.
  (LEVELS[level] >= LEVELS.warn ? process.stderr : process.stdout).write(line);
}

/** @param {unknown} e */
function errorFields(e) {
  if (!(e instanceof Error)) return { error: { message: String(e) } };
  const code = /** @type {{ code?: unknown }} */ (e).code;
  return { error: { name: e.name, ...(code === undefined ? {} : { code }), message: e.message, stack: e.stack } };
}

// ---------------------------------------------------------------------------------------------------------------------
// Metrics.
// ---------------------------------------------------------------------------------------------------------------------

const ROUTES = new Set(['/predict', '/healthz', '/metrics', '/report']);

/**
 * loading → ready → draining (SIGTERM: /healthz 503, still serving during --drain-delay-ms) → closing (listener
 * closed, new predictions 503, in-flight ones finish).
 * @type {'loading' | 'ready' | 'draining' | 'closing'}
 */
let state = 'loading';
// prom-client's default registry: every metric below registers there by itself.
const registry = client.register;
// Process metrics, including the event-loop delay (nodejs_eventloop_lag_*; perf_hooks.monitorEventLoopDelay underneath).
client.collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 10 });

const metrics = {
  requestDuration: new client.Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time from the request\'s headers to the end of its response, by route, method and status ("aborted" when the client left first).',
    labelNames: /** @type {const} */ (['route', 'method', 'status']),
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  }),
  forwardDuration: new client.Histogram({
    name: 'model_forward_duration_seconds',
    help: 'Time of one model forward (libtorch, on a worker thread), by outcome.',
    labelNames: /** @type {const} */ (['outcome']),
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  }),
  queueWait: new client.Histogram({
    name: 'model_queue_wait_seconds',
    help: 'Time a parsed request waited for a free forward slot.',
    buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
  }),
  inFlight: new client.Gauge({
    name: 'http_requests_in_flight', help: 'Requests received and not yet answered, by route.',
    labelNames: /** @type {const} */ (['route']),
  }),
  queueDepth: new client.Gauge({ name: 'model_queue_depth', help: 'Requests waiting for a forward slot.' }),
  running: new client.Gauge({ name: 'model_forwards_running', help: 'Forwards running now.' }),
  ready: new client.Gauge({ name: 'service_ready', help: '1 when the model is loaded and the service takes requests, else 0.' }),
  modelInfo: new client.Gauge({
    name: 'torchfold_model_info', help: 'The model served (value 1): file, whether it was fused, versions.',
    labelNames: /** @type {const} */ (['model', 'variant', 'torchfold', 'libtorch']),
  }),
  loadSeconds: new client.Gauge({ name: 'torchfold_model_load_seconds', help: 'Time to load the model file.' }),
  fusePairs: new client.Gauge({
    name: 'torchfold_fuse_pairs', help: 'conv → BatchNorm pairs found at start, by status (folded or skipped).',
    labelNames: /** @type {const} */ (['status']),
  }),
  fuseBatchNorms: new client.Gauge({
    name: 'torchfold_fuse_batchnorms', help: 'BatchNorms that run, before and after fusing.',
    labelNames: /** @type {const} */ (['module']),
  }),
  fuseMaxAbsError: new client.Gauge({
    name: 'torchfold_fuse_validation_max_abs_error', help: 'Largest |fused - original| output difference on the sample input.',
  }),
  fuseMaxRelError: new client.Gauge({
    name: 'torchfold_fuse_validation_max_rel_error', help: 'Largest relative output difference on the sample input.',
  }),
  fusePassed: new client.Gauge({
    name: 'torchfold_fuse_validation_passed', help: '1 when the fused outputs were within the tolerance.',
  }),
  fuseSeconds: new client.Gauge({
    name: 'torchfold_fuse_seconds', help: 'Time of each fuse phase at start (analyze, fold, rewrite, validate, benchmark, total).',
    labelNames: /** @type {const} */ (['phase']),
  }),
  fuseLatency: new client.Gauge({
    name: 'torchfold_fuse_benchmark_latency_seconds', help: 'Median forward latency measured at start (--bench), before and after fusing.',
    labelNames: /** @type {const} */ (['module']),
  }),
  fuseSpeedup: new client.Gauge({
    name: 'torchfold_fuse_benchmark_speedup', help: 'Median latency before / after fusing (--bench).',
  }),
};

/** @param {FuseReport} report */
function recordFuseReport(report) {
  metrics.fusePairs.set({ status: 'folded' }, report.folded);
  metrics.fusePairs.set({ status: 'skipped' }, report.skipped);
  metrics.fuseBatchNorms.set({ module: 'before' }, report.batchNorms.before);
  metrics.fuseBatchNorms.set({ module: 'after' }, report.batchNorms.after);
  for (const [phase, ms] of Object.entries(report.timings)) metrics.fuseSeconds.set({ phase }, ms / 1000);
  if (report.validation) {
    metrics.fuseMaxAbsError.set(report.validation.maxAbsError);
    metrics.fuseMaxRelError.set(report.validation.maxRelError);
    metrics.fusePassed.set(report.validation.passed ? 1 : 0);
  }
  if (report.benchmark) {
    metrics.fuseLatency.set({ module: 'before' }, report.benchmark.before.medianMs / 1000);
    metrics.fuseLatency.set({ module: 'after' }, report.benchmark.after.medianMs / 1000);
    metrics.fuseSpeedup.set(report.benchmark.speedup);
  }
}

/** The one-line summary logged at start; the whole report is at GET /report. @param {FuseReport} report */
function fuseSummary(report) {
  const round = (/** @type {number} */ x) => Math.round(x * 1000) / 1000;
  return {
    folded: report.folded,
    skipped: report.skipped,
    skippedPairs: report.pairs.filter((p) => p.status === 'skipped').slice(0, 20)
      .map((p) => ({ conv: p.conv, norm: p.norm, reason: p.reason })),
    batchNorms: report.batchNorms,
    validation: report.validation && {
      passed: report.validation.passed, maxAbsError: report.validation.maxAbsError, maxRelError: report.validation.maxRelError,
      atol: report.validation.atol, rtol: report.validation.rtol,
    },
    timingsMs: Object.fromEntries(Object.entries(report.timings).map(([k, ms]) => [k, round(ms)])),
    benchmark: report.benchmark && {
      iterations: report.benchmark.iterations, beforeMedianMs: round(report.benchmark.before.medianMs),
      afterMedianMs: round(report.benchmark.after.medianMs), speedup: round(report.benchmark.speedup),
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------------
// HTTP helpers.
// ---------------------------------------------------------------------------------------------------------------------

/** An error with the HTTP status and the stable code it is answered with. */
class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {Record<string, string>} [headers]
   */
  constructor(status, code, message, headers = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/**
 * How a failure is answered. torchfold's argument errors (TypeError/RangeError with code ERR_INVALID_ARG) are the
 * caller's fault; ERR_TORCH is libtorch refusing the input (a wrong shape or dtype for the model), so 422; a disposed
 * or busy module means we are shutting down; anything else is ours (500).
 * @param {unknown} e
 * @returns {{ status: number, code: string, message: string, headers: Record<string, string> }}
 */
function toHttpError(e) {
  if (e instanceof HttpError) return { status: e.status, code: e.code, message: e.message, headers: e.headers };
  const code = /** @type {{ code?: unknown }} */ (e)?.code;
  const message = e instanceof Error ? e.message : String(e);
  // libtorch's messages go on with the TorchScript traceback: the first line says what was wrong.
  const firstLine = message.split('\n')[0].trim();
  if (code === 'ERR_INVALID_ARG') return { status: 400, code, message: firstLine, headers: {} };
  if (e instanceof TorchfoldError) {
    switch (e.code) {
      case 'ERR_TORCH': return { status: 422, code: e.code, message: `The model rejected the input: ${firstLine}`, headers: {} };
      case 'ERR_DISPOSED':
      case 'ERR_BUSY': return { status: 503, code: e.code, message: 'The model is shutting down', headers: { 'Retry-After': '1' } };
      default: return { status: 500, code: e.code, message: firstLine, headers: {} };
    }
  }
  return { status: 500, code: 'ERR_INTERNAL', message: 'Internal error', headers: {} };
}

/**
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {unknown} body
 * @param {Record<string, string>} [headers]
 */
function sendJson(res, status, body, headers = {}) {
  const data = Buffer.from(JSON.stringify(body));
  send(res, status, { ...headers, 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': String(data.length) }, data);
}

/**
 * Writes a whole answer. Once the service drains, every answer closes its connection, so keep-alive clients
 * reconnect elsewhere.
 * @param {http.ServerResponse} res
 * @param {number} status
 * @param {Record<string, string>} headers
 * @param {Buffer | string} body
 */
function send(res, status, headers, body) {
  if (state === 'draining' || state === 'closing') headers = { ...headers, Connection: 'close' };
  res.writeHead(status, headers);
  res.end(body);
}

/** The media type of a Content-Type header, lower case, without parameters. @param {string | undefined} h */
function mediaType(h) {
  return (h ?? '').split(';')[0].trim().toLowerCase();
}

/**
 * Picks the response format from an Accept header: 'json' (the default), 'binary', or null when the client accepts
 * neither (406). Honours q-values; an exact type beats a wildcard of the same q.
 * @param {string | undefined} accept
 * @returns {'json' | 'binary' | null}
 */
function negotiate(accept) {
  if (!accept || !accept.trim()) return 'json';
  /** @type {'json' | 'binary' | null} */
  let best = null;
  let bestRank = -1;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.split(';').map((s) => s.trim().toLowerCase());
    let q = 1;
    for (const p of params) if (p.startsWith('q=')) q = Number(p.slice(2));
    if (!(q > 0) || q > 1) continue;
    /** @type {'json' | 'binary' | null} */
    let format = null;
    let exact = 1;
    if (type === 'application/json') format = 'json';
    else if (type === 'application/octet-stream') format = 'binary';
    else if (type === '*/*' || type === 'application/*') { format = 'json'; exact = 0; }
    if (!format) continue;
    const rank = q * 2 + exact;
    if (rank > bestRank) { best = format; bestRank = rank; }
  }
  return best;
}

/**
 * Reads a request body of at most `limit` bytes. Past the limit it rejects with 413 and goes on discarding what the
 * client sends, so the client can read the answer (closing on a client still writing would reset the connection).
 * @param {http.IncomingMessage} req
 * @param {number} limit
 * @returns {Promise<Buffer>}
 */
function readBody(req, limit) {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new HttpError(413, 'ERR_BODY_TOO_LARGE', `The request body is larger than ${limit} bytes`);
    const declared = req.headers['content-length'];
    if (declared !== undefined && Number(declared) > limit) {
      // Not read at all: node:http discards the body after the answer.
      reject(tooLarge());
      return;
    }
    /** @type {Buffer[]} */
    const chunks = [];
    let size = 0;
    let failed = false;
    req.on('data', (/** @type {Buffer} */ chunk) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(tooLarge());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => { if (!failed) resolve(Buffer.concat(chunks, size)); });
    req.on('error', (e) => { if (!failed) { failed = true; reject(e); } });
    req.on('close', () => {
      if (!failed && !req.complete) { failed = true; reject(new HttpError(400, 'ERR_ABORTED', 'The client aborted the request')); }
    });
  });
}

/**
 * A shape given by a client: 1 to 8 positive integers.
 * @param {unknown} shape
 * @param {string} where
 * @returns {number[]}
 */
function checkShape(shape, where) {
  if (shape === undefined || shape === null) throw new HttpError(400, 'ERR_BAD_SHAPE', `Missing ${where}`);
  if (!Array.isArray(shape) || shape.length === 0 || shape.length > 8
    || !shape.every((d) => Number.isSafeInteger(d) && d >= 1 && d <= 2 ** 31)) {
    throw new HttpError(400, 'ERR_BAD_SHAPE', `Expected ${where} to be 1 to 8 positive integers, got ${JSON.stringify(shape)?.slice(0, 100)}`);
  }
  return shape;
}

/** @param {number[]} shape */
const numel = (shape) => shape.reduce((a, b) => a * b, 1);

// ---------------------------------------------------------------------------------------------------------------------
// Concurrency: at most `concurrency` forwards at once, the rest wait in FIFO order.
// ---------------------------------------------------------------------------------------------------------------------

class Limiter {
  /** @param {number} size */
  constructor(size) {
    this.size = size;
    this.running = 0;
    /** @type {(() => void)[]} */
    this.waiting = [];
  }

  /** @returns {Promise<void>} */
  acquire() {
    if (this.running < this.size) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  release() {
    const next = this.waiting.shift();
    if (next) next();  // the slot passes straight to the next waiter
    else this.running--;
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// The service.
// ---------------------------------------------------------------------------------------------------------------------

/** @param {Config} cfg */
async function main(cfg) {
  minLevel = LEVELS[cfg.logLevel];
  if (cfg.threads !== undefined) setNumThreads(cfg.threads);

  /** @type {ScriptModule | null} */
  let model = null;
  /** @type {FuseReport | null} */
  let report = null;
  let outputInfo = /** @type {{ shape: number[], dtype: string } | null} */ (null);
  const limiter = new Limiter(cfg.concurrency);
  const capacity = cfg.concurrency + cfg.maxQueue;
  let admitted = 0;  // /predict requests between arrival and answer
  let active = 0;  // every request between arrival and answer
  /** @type {(() => void) | null} */
  let onIdle = null;
  const sampleDims = cfg.shape.slice(1);
  const expectedShape = `[N${sampleDims.map((d) => `, ${d}`).join('')}] with 1 <= N <= ${cfg.maxBatch}`;

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   * @param {string} requestId
   * @param {{ closed: boolean }} conn
   */
  async function predict(req, res, requestId, conn) {
    if (state === 'loading') throw new HttpError(503, 'ERR_NOT_READY', 'The model is still loading', { 'Retry-After': '1' });
    if (state === 'closing') throw new HttpError(503, 'ERR_SHUTTING_DOWN', 'The service is shutting down');
    if (admitted >= capacity) {
      throw new HttpError(503, 'ERR_OVERLOADED', `Too many requests in progress (${capacity}); retry later`, { 'Retry-After': '1' });
    }
    admitted++;
    try {
      const format = negotiate(req.headers.accept);
      if (!format) throw new HttpError(406, 'ERR_NOT_ACCEPTABLE', 'Accept must allow application/json or application/octet-stream');
      const type = mediaType(req.headers['content-type']);
      /** @type {number[]} */
      let shape;
      /** @type {Float32Array} */
      let data;
      if (type === 'application/octet-stream') {
        const header = req.headers['x-shape'];
        if (typeof header !== 'string' || !header.trim()) {
          throw new HttpError(400, 'ERR_BAD_SHAPE', 'Missing the X-Shape header (e.g. X-Shape: 1,3,64,64) for a binary body');
        }
        const parts = header.split(',').map((s) => s.trim());
        if (!parts.every((s) => /^\d{1,10}$/.test(s))) {
          throw new HttpError(400, 'ERR_BAD_SHAPE', `Expected X-Shape to be positive integers separated by commas, got '${header.slice(0, 100)}'`);
        }
        shape = checkShape(parts.map(Number), 'X-Shape');
        const body = await readBody(req, cfg.maxBodyBytes);
        if (body.length !== numel(shape) * 4) {
          throw new HttpError(400, 'ERR_SIZE_MISMATCH',
            `X-Shape [${shape.join(', ')}] needs ${numel(shape) * 4} bytes of float32, the body has ${body.length}`);
        }
        // Copy into an aligned buffer (a Buffer may start at any byte), as little-endian float32.
        data = new Float32Array(numel(shape));
        new Uint8Array(data.buffer).set(body);
        if (os.endianness() === 'BE') {
          const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
          for (let i = 0; i < data.length; i++) data[i] = view.getFloat32(i * 4, true);
        }
        const bad = data.findIndex((x) => !Number.isFinite(x));
        if (bad >= 0) throw new HttpError(400, 'ERR_BAD_DATA', `Element ${bad} is not a finite number (${data[bad]})`);
      } else if (type === 'application/json' || type.endsWith('+json')) {
        const body = await readBody(req, cfg.maxBodyBytes);
        /** @type {unknown} */
        let json;
        try {
          json = JSON.parse(body.toString('utf8'));
        } catch (e) {
          throw new HttpError(400, 'ERR_BAD_JSON', `The body is not valid JSON: ${/** @type {Error} */ (e).message}`);
        }
        if (json === null || typeof json !== 'object' || Array.isArray(json)) {
          throw new HttpError(400, 'ERR_BAD_JSON', 'Expected a JSON object { "shape": [...], "data": [...] }');
        }
        const input = /** @type {{ shape?: unknown, data?: unknown }} */ (json);
        shape = checkShape(input.shape, '"shape"');
        if (!Array.isArray(input.data)) throw new HttpError(400, 'ERR_BAD_DATA', 'Expected "data" to be a flat array of numbers');
        if (input.data.length !== numel(shape)) {
          throw new HttpError(400, 'ERR_SIZE_MISMATCH',
            `"shape" [${shape.join(', ')}] has ${numel(shape)} elements, "data" has ${input.data.length}`);
        }
        data = new Float32Array(input.data.length);
        for (let i = 0; i < data.length; i++) {
          const x = input.data[i];
          if (typeof x !== 'number') throw new HttpError(400, 'ERR_BAD_DATA', `"data"[${i}] is not a number: ${JSON.stringify(x)?.slice(0, 40)}`);
          data[i] = x;
          if (!Number.isFinite(data[i])) throw new HttpError(400, 'ERR_BAD_DATA', `"data"[${i}] is outside the float32 range: ${x}`);
        }
      } else {
        throw new HttpError(415, 'ERR_UNSUPPORTED_MEDIA_TYPE',
          `Content-Type must be application/json or application/octet-stream, got '${req.headers['content-type'] ?? ''}'`);
      }
      if (cfg.shapeCheck && (shape.length !== cfg.shape.length || shape[0] > cfg.maxBatch
        || shape.some((d, i) => i > 0 && d !== cfg.shape[i]))) {
        throw new HttpError(400, 'ERR_INPUT_SHAPE', `Expected a shape ${expectedShape}, got [${shape.join(', ')}]`);
      }

      const queuedAt = performance.now();
      metrics.queueDepth.inc();
      await limiter.acquire();
      metrics.queueDepth.dec();
      metrics.queueWait.observe((performance.now() - queuedAt) / 1000);
      try {
        if (conn.closed) return;  // the client left while waiting: skip the forward
        const current = /** @type {ScriptModule} */ (model);
        const input = Tensor.from(data, shape);
        metrics.running.inc();
        const t0 = performance.now();
        /** @type {TorchValue} */
        let output;
        try {
          output = await current.forward(input);
          metrics.forwardDuration.observe({ outcome: 'ok' }, (performance.now() - t0) / 1000);
        } catch (e) {
          metrics.forwardDuration.observe({ outcome: 'error' }, (performance.now() - t0) / 1000);
          throw e;
        } finally {
          input.dispose();
          metrics.running.dec();
        }
        try {
          if (!(output instanceof Tensor)) {
            throw new HttpError(500, 'ERR_MODEL_OUTPUT', 'The model did not return a single tensor; this service serves only such models');
          }
          const values = output.toTypedArray();
          const outShape = output.shape;
          const dtype = output.dtype;
          if (format === 'binary') {
            const bytes = Buffer.from(values.buffer, values.byteOffset, values.byteLength);
            if (os.endianness() === 'BE') {  // answer little-endian everywhere
              if (values.BYTES_PER_ELEMENT === 2) bytes.swap16();
              else if (values.BYTES_PER_ELEMENT === 4) bytes.swap32();
              else if (values.BYTES_PER_ELEMENT === 8) bytes.swap64();
            }
            send(res, 200, {
              'Content-Type': 'application/octet-stream', 'Content-Length': String(bytes.length),
              'X-Shape': outShape.join(','), 'X-Dtype': dtype, 'X-Request-Id': requestId,
            }, bytes);
          } else {
            // Values, not bits: float16/bfloat16 come decoded (the binary answer keeps the raw bits, with X-Dtype).
            const decoded = output.toValues();
            const list = decoded instanceof BigInt64Array ? Array.from(decoded, Number) : Array.from(decoded);
            sendJson(res, 200, { shape: outShape, dtype, data: list }, { 'X-Request-Id': requestId });
          }
        } finally {
          disposeTensors(output);
        }
      } finally {
        limiter.release();
      }
    } finally {
      admitted--;
    }
  }

  /**
   * @param {http.IncomingMessage} req
   * @param {http.ServerResponse} res
   */
  async function handle(req, res) {
    const started = performance.now();
    const requestId = (typeof req.headers['x-request-id'] === 'string' && req.headers['x-request-id'].slice(0, 128)) || randomUUID();
    const pathname = (req.url ?? '/').split('?')[0].slice(0, 200);
    const route = ROUTES.has(pathname) ? pathname : 'other';
    const method = ['GET', 'HEAD', 'POST'].includes(req.method ?? '') ? /** @type {string} */ (req.method) : 'other';
    const conn = { closed: false };
    active++;
    metrics.inFlight.inc({ route });
    res.once('close', () => {
      conn.closed = true;
      active--;
      metrics.inFlight.dec({ route });
      const status = res.writableFinished ? String(res.statusCode) : 'aborted';
      const seconds = (performance.now() - started) / 1000;
      metrics.requestDuration.observe({ route, method, status }, seconds);
      log('debug', 'request', { requestId, method: req.method, path: pathname, status, ms: Math.round(seconds * 1e6) / 1000 });
      if (active === 0 && onIdle) onIdle();
    });

    try {
      if (pathname === '/predict') {
        if (req.method !== 'POST') throw new HttpError(405, 'ERR_METHOD_NOT_ALLOWED', 'Use POST for /predict', { Allow: 'POST' });
        await predict(req, res, requestId, conn);
      } else if (ROUTES.has(pathname)) {
        if (req.method !== 'GET' && req.method !== 'HEAD') {
          throw new HttpError(405, 'ERR_METHOD_NOT_ALLOWED', `Use GET for ${pathname}`, { Allow: 'GET, HEAD' });
        }
        if (pathname === '/healthz') {
          if (state === 'ready') sendJson(res, 200, { status: 'ok' });
          else sendJson(res, 503, { status: state === 'loading' ? 'loading' : 'draining' }, { 'Retry-After': '1' });
        } else if (pathname === '/metrics') {
          const text = await registry.metrics();
          send(res, 200, { 'Content-Type': registry.contentType, 'Content-Length': String(Buffer.byteLength(text)) }, text);
        } else if (!report) {
          throw state === 'loading' ? new HttpError(503, 'ERR_NOT_READY', 'The model is still loading', { 'Retry-After': '1' })
            : new HttpError(404, 'ERR_NO_REPORT', 'The model is served as loaded (--no-fuse): there is no fuse report');
        } else {
          sendJson(res, 200, report);
        }
      } else {
        throw new HttpError(404, 'ERR_NOT_FOUND', `No route ${pathname}; try POST /predict, GET /healthz, /metrics or /report`);
      }
    } catch (e) {
      const err = toHttpError(e);
      if (err.status >= 500 && err.status !== 503) log('error', 'request failed', { requestId, path: pathname, status: err.status, ...errorFields(e) });
      else log('debug', 'request rejected', { requestId, path: pathname, status: err.status, code: err.code, message: err.message });
      if (res.headersSent) {
        res.destroy();  // cannot change an answer already started
      } else if (!res.destroyed) {
        sendJson(res, err.status, { error: { code: err.code, message: err.message } }, { ...err.headers, 'X-Request-Id': requestId });
      }
    }
  }

  const server = http.createServer((req, res) => { void handle(req, res); });
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;  // the whole request, body included

  // ---- shutdown ----------------------------------------------------------------------------------------------------
  /** @type {Promise<void> | null} */
  let shuttingDown = null;
  /** @type {Promise<void>} */
  let starting = Promise.resolve();
  const startAbort = new AbortController();  // a signal during the start stops the fuse early

  /** @param {string} reason */
  async function shutdown(reason) {
    const t0 = performance.now();
    log('info', 'shutdown started', { reason, inFlight: active, state });
    const wasLoading = state === 'loading';
    state = 'draining';
    if (wasLoading) startAbort.abort(new Error(`${reason} during start`));
    metrics.ready.set(0);
    if (cfg.drainDelayMs > 0 && !wasLoading) {
      log('info', 'draining: /healthz answers 503, still serving', { drainDelayMs: cfg.drainDelayMs });
      await new Promise((resolve) => setTimeout(resolve, cfg.drainDelayMs));
    }
    state = 'closing';
    const closed = new Promise((resolve) => server.close(resolve));  // also closes idle keep-alive connections (Node >= 19)
    server.closeIdleConnections();
    log('info', 'stopped accepting connections', { inFlight: active });

    let timedOut = false;
    if (active > 0) {
      log('info', 'waiting for in-flight requests', { inFlight: active, deadlineMs: cfg.shutdownTimeoutMs });
      /** @type {NodeJS.Timeout | undefined} */
      let timer;
      await Promise.race([
        new Promise((resolve) => { onIdle = () => resolve(undefined); }),
        new Promise((resolve) => { timer = setTimeout(() => { timedOut = true; resolve(undefined); }, cfg.shutdownTimeoutMs); }),
      ]);
      clearTimeout(timer);
    }
    if (timedOut) {
      log('warn', 'shutdown deadline reached: closing the connections of the requests left', { abandoned: active });
      server.closeAllConnections();
    } else {
      log('info', 'in-flight requests finished', { waitedMs: Math.round(performance.now() - t0) });
      server.closeIdleConnections();
    }
    await closed;
    log('info', 'connections closed');
    await starting.catch(() => {});
    if (model) {
      await model.dispose();  // waits for forwards still running, then frees the native memory
      log('info', 'model disposed');
    } else {
      log('info', 'the start was stopped before the model was ready; what it made is freed');
    }
    const code = timedOut ? 1 : 0;
    log('info', 'exit', { code, shutdownMs: Math.round(performance.now() - t0) });
    process.exitCode = code;
    // Nothing else should hold the loop; if something does, do not hang the orchestrator.
    setTimeout(() => process.exit(code), 2_000).unref();
  }

  /** @param {NodeJS.Signals} signal */
  const onSignal = (signal) => {
    if (shuttingDown) {
      log('warn', 'second signal: exiting now', { signal });
      process.exit(1);
    }
    shuttingDown = shutdown(signal).catch((e) => {
      log('error', 'shutdown failed', errorFields(e));
      process.exit(1);
    });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  // ---- start: listen first (so /healthz says "loading"), then load and fuse --------------------------------------
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(cfg.port, cfg.host, () => { server.off('error', reject); resolve(undefined); });
  });
  server.on('error', (e) => log('error', 'server error', errorFields(e)));
  const address = /** @type {import('node:net').AddressInfo} */ (server.address());
  const url = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  log('info', 'listening', { host: address.address, port: address.port, url });

  const t0 = performance.now();
  // Load, fuse and warm up. A SIGTERM meanwhile lets this finish, then disposes what it made.
  starting = (async () => {
    const loaded = await load(cfg.model);
    const loadMs = performance.now() - t0;
    metrics.loadSeconds.set(loadMs / 1000);
    log('info', 'model loaded', { model: cfg.model, methods: loaded.methods, loadMs: Math.round(loadMs * 1000) / 1000, threads: getNumThreads() });
    // A file saved by `torchfold optimize --optimize` holds a recipe: load() has redone its
    // run-time steps (e.g. oneDNN Graph fusion) and checked them; fusing again would drop them.
    if (loaded.recipe) {
      log(loaded.recipe.applied ? 'info' : 'warn', 'recipe', { ...loaded.recipe, applyMs: Math.round(loaded.recipe.applyMs) });
    }

    if (cfg.fuse && loaded.recipe) {
      model = loaded;
      log('info', 'fuse skipped: the file was optimized by torchfold (its recipe was re-applied at load)');
    } else if (cfg.fuse) {
      try {
        const fused = await loaded.fuse({
          validate: { inputs: [cfg.shape], atol: cfg.atol, rtol: cfg.rtol, onFailure: cfg.onFailure },
          ...(cfg.bench > 0 ? { benchmark: { inputs: [cfg.shape], iterations: cfg.bench } } : {}),
          signal: startAbort.signal,
        });
        model = fused.module;
        report = fused.report;
      } finally {
        await loaded.dispose();  // the fused module is a separate copy
      }
      recordFuseReport(report);
      const summary = fuseSummary(report);
      log(report.validation?.passed === false ? 'warn' : 'info', 'fused', summary);
    } else {
      model = loaded;
      log('info', 'fuse skipped (--no-fuse): serving the model as loaded');
    }
    metrics.modelInfo.set({ model: path.basename(cfg.model), variant: cfg.fuse ? 'fused' : 'as_loaded',
      torchfold: versions.torchfold, libtorch: versions.libtorch }, 1);

    // One forward on the sample shape: checks that the model takes it and returns a tensor, and warms it up.
    const sample = Tensor.from(new Float32Array(numel(cfg.shape)), cfg.shape);
    try {
      const out = await model.forward(sample);
      try {
        if (!(out instanceof Tensor)) throw new Error(`The model's forward returned ${typeof out}, not a tensor: this service serves single-tensor models`);
        outputInfo = { shape: out.shape, dtype: out.dtype };
      } finally {
        disposeTensors(out);
      }
    } catch (e) {
      throw Object.assign(new Error(`The model cannot run on --input-shape ${cfg.shape.join(',')}: ${/** @type {Error} */ (e).message.split('\n')[0]}`),
        { cause: e });
    } finally {
      sample.dispose();
    }
  })();
  try {
    await starting;
  } catch (e) {
    if (startAbort.signal.aborted) return;  // stopped by a signal: shutdown() finishes the job
    throw e;
  }

  if (state !== 'loading') return;  // a signal came during the start; shutdown() finishes the job
  state = 'ready';
  metrics.ready.set(1);
  log('info', 'ready', {
    url, port: address.port, model: cfg.model, fused: cfg.fuse, inputShape: cfg.shape, maxBatch: cfg.maxBatch,
    output: outputInfo, concurrency: cfg.concurrency, maxQueue: cfg.maxQueue, startupMs: Math.round(performance.now() - t0),
  });
}

/** Frees every tensor in a forward's result. @param {TorchValue} v */
function disposeTensors(v) {
  if (v instanceof Tensor) v.dispose();
  else if (Array.isArray(v)) v.forEach(disposeTensors);
  else if (v instanceof Map) v.forEach(disposeTensors);
  else if (v && typeof v === 'object') Object.values(v).forEach(disposeTensors);
}

// ---------------------------------------------------------------------------------------------------------------------

process.on('uncaughtException', (e) => {
  log('error', 'uncaught exception', errorFields(e));
  process.exit(1);
});
process.on('unhandledRejection', (e) => {
  log('error', 'unhandled rejection', errorFields(e));
  process.exit(1);
});

let config;
try {
  config = parseConfig(process.argv.slice(2), process.env);
} catch (e) {
  if (!(e instanceof ConfigError)) throw e;
  log('error', 'bad configuration', { error: { code: 'ERR_CONFIG', message: e.message } });
  process.stderr.write(`\n${USAGE}`);
  process.exit(2);
}
if (config === null) {
  process.stdout.write(USAGE);
} else {
  log('info', 'starting', { config, node: process.version, torchfold: versions.torchfold, libtorch: versions.libtorch });
  main(config).catch((e) => {
    log('error', 'startup failed', errorFields(e));
    process.exit(1);
  });
}
