// examples/service: the HTTP inference service (server.mjs) and its load test (loadtest.mjs), run as real child
// processes on free ports. Outputs are compared with PyTorch's own (the fixture's .bin files); counts and fuse
// figures with what the library computes in this process. No timing is asserted.
import { ChildProcess, spawn } from 'child_process';
import * as http from 'http';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load } from '../lib';
import { model, readTensorData, ROOT } from './helpers/fixtures';

const SERVER = path.join(ROOT, 'examples', 'service', 'server.mjs');
const LOADTEST = path.join(ROOT, 'examples', 'service', 'loadtest.mjs');

// A 4-D float32 input with PyTorch's output for it.
const FIXTURE = model('convbn_scripted');
interface Ref { file: string; dtype: 'float32'; shape: number[] }
const CASE = FIXTURE.cases.find((c) => c.method === 'forward' && c.mode === 'eval')!;
const IN = (CASE.inputs[0] as unknown as { __tensor__: Ref }).__tensor__;
const OUT = (CASE.output as unknown as { __tensor__: Ref }).__tensor__;
const INPUT = readTensorData(IN) as Float32Array;
const EXPECTED = readTensorData(OUT) as Float32Array;
const SHAPE = IN.shape;
const ATOL = 1e-5;

type LogEntry = Record<string, unknown> & { msg: string; level: string };

interface Server {
  child: ChildProcess;
  port: number;
  logs: LogEntry[];
  /** Every request this test sent, by the labels of http_request_duration_seconds. */
  sent: Map<string, number>;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first log entry (past or future) that matches. */
  waitLog: (pred: (e: LogEntry) => boolean, what: string) => Promise<LogEntry>;
}

function startServer(args: string[]): Promise<Server> {
  const child = spawn(process.execPath, [SERVER, '--port', '0', ...args], {
    cwd: ROOT, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: LogEntry[] = [];
  let all = '';
  const waiters: { pred: (e: LogEntry) => boolean; resolve: (e: LogEntry) => void }[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.on('exit', (code, signal) => resolve({ code, signal }));
  });
  const feed = (stream: NodeJS.ReadableStream) => {
    let rest = '';
    stream.setEncoding('utf8');
    stream.on('data', (s: string) => {
      all += s;
      const lines = (rest + s).split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        if (!line.trim()) continue;
        let e: LogEntry;
        try {
          e = JSON.parse(line) as LogEntry;
        } catch {
          throw new Error(`server printed a line that is not JSON: ${line}`);
        }
        logs.push(e);
        for (const w of [...waiters]) if (w.pred(e)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(e); }
      }
    });
  };
  feed(child.stdout!);
  feed(child.stderr!);
  const waitLog = (pred: (e: LogEntry) => boolean, what: string) => {
    const found = logs.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise<LogEntry>((resolve, reject) => {
      waiters.push({ pred, resolve });
      void exited.then(({ code, signal }) => reject(new Error(`server exited (${code ?? signal}) before logging ${what}:\n${all}`)));
    });
  };
  return waitLog((e) => e.msg === 'ready', '"ready"').then((ready) => ({
    child, port: ready.port as number, logs, sent: new Map(), output: () => all, exited, waitLog,
  }));
}

const ROUTES = new Set(['/predict', '/healthz', '/metrics', '/report']);

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- parsed answers are checked field by field
interface Reply { status: number; headers: Headers; body: Buffer; json: () => any }

/** fetch() that tallies what was sent, by route, method and status, as the server's histogram labels them. */
async function call(s: Server, route: string, init: RequestInit = {}): Promise<Reply> {
  const res = await fetch(`http://127.0.0.1:${s.port}${route}`, init);
  const body = Buffer.from(await res.arrayBuffer());
  const key = `${ROUTES.has(route) ? route : 'other'} ${init.method ?? 'GET'} ${res.status}`;
  s.sent.set(key, (s.sent.get(key) ?? 0) + 1);
  return { status: res.status, headers: res.headers, body, json: () => JSON.parse(body.toString('utf8')) };
}

const jsonBody = (shape: number[], data: ArrayLike<number>) => JSON.stringify({ shape, data: Array.from(data) });

function postJson(s: Server, shape: number[], data: ArrayLike<number>, headers: Record<string, string> = {}): Promise<Reply> {
  return call(s, '/predict', { method: 'POST', headers: { 'Content-Type': 'application/json', ...headers }, body: jsonBody(shape, data) });
}

function postBinary(s: Server, shape: number[], data: Float32Array, accept = 'application/octet-stream'): Promise<Reply> {
  return call(s, '/predict', {
    method: 'POST',
    headers: { 'Content-Type': 'application/octet-stream', 'X-Shape': shape.join(','), Accept: accept },
    body: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** Checks a 200 answer against PyTorch's output, in either format. */
function expectPyTorchOutput(r: Reply): void {
  expect(r.status, r.body.toString('utf8').slice(0, 300)).toBe(200);
  if (r.headers.get('content-type') === 'application/octet-stream') {
    expect(r.headers.get('x-shape')).toBe(OUT.shape.join(','));
    expect(r.headers.get('x-dtype')).toBe('float32');
    const copy = new Float32Array(r.body.length / 4);
    new Uint8Array(copy.buffer).set(r.body);
    expect(maxAbsDiff(copy, EXPECTED)).toBeLessThanOrEqual(ATOL);
  } else {
    const j = r.json() as { shape: number[]; dtype: string; data: number[] };
    expect(j.shape).toEqual(OUT.shape);
    expect(j.dtype).toBe('float32');
    expect(maxAbsDiff(j.data, EXPECTED)).toBeLessThanOrEqual(ATOL);
  }
}

function expectError(r: Reply, status: number, code: string): void {
  expect(r.status, r.body.toString('utf8').slice(0, 300)).toBe(status);
  expect(r.headers.get('content-type')).toMatch(/^application\/json/);
  const j = r.json() as { error: { code: string; message: string } };
  expect(j.error.code).toBe(code);
  expect(typeof j.error.message).toBe('string');
  expect(j.error.message.length).toBeGreaterThan(0);
}

/** The value of one Prometheus sample, e.g. metric('x_count', { route: '/predict' }); undefined when absent. */
function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v) && Object.keys(have).length === Object.keys(labels).length) return Number(m[4]);
  }
  return undefined;
}

/** A raw node:http request (for bodies sent in pieces). */
function rawRequest(port: number, options: http.RequestOptions): { req: http.ClientRequest; reply: Promise<{ status: number; body: string }> } {
  const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/predict', agent: false, ...options });
  const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.on('error', reject);
    req.on('response', (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => { body += c; }).on('end', () => resolve({ status: res.statusCode!, body }));
    });
  });
  return { req, reply };
}

const running: Server[] = [];
afterAll(() => {
  for (const s of running) if (s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGKILL');
});

describe('server.mjs, fused', () => {
  let s: Server;
  let folded: number;
  let skipped: number;

  beforeAll(async () => {
    s = await startServer(['--model', FIXTURE.path, '--input-shape', SHAPE.join(','), '--max-batch', String(SHAPE[0] * 2),
      '--bench', '3', '--max-body-bytes', '200000']);
    running.push(s);
    // What the library decides for this model, computed here.
    const m = await load(FIXTURE.path);
    const plan = await m.inspect();
    await m.dispose();
    folded = plan.folded;
    skipped = plan.skipped;
  });

  it('logs the bound port and the fuse report as JSON lines', () => {
    const listening = s.logs.find((e) => e.msg === 'listening')!;
    expect(listening.port).toBe(s.port);
    expect(listening.port).toBeGreaterThan(0);
    const fused = s.logs.find((e) => e.msg === 'fused') as LogEntry & {
      folded: number; skipped: number; validation: { passed: boolean; maxAbsError: number };
      timingsMs: Record<string, number>; benchmark: { beforeMedianMs: number; afterMedianMs: number };
    };
    expect(fused).toBeDefined();
    expect(folded).toBeGreaterThan(0);
    expect(fused.folded).toBe(folded);
    expect(fused.skipped).toBe(skipped);
    expect(fused.validation.passed).toBe(true);
    expect(fused.validation.maxAbsError).toBeLessThanOrEqual(1e-4);
    expect(fused.timingsMs.total).toBeGreaterThan(0);
    expect(fused.benchmark.beforeMedianMs).toBeGreaterThan(0);
    const ready = s.logs.find((e) => e.msg === 'ready')!;
    expect(ready).toMatchObject({ fused: true, inputShape: SHAPE, output: { shape: OUT.shape, dtype: 'float32' } });
    expect(s.logs.every((e) => typeof e.time === 'string' && typeof e.level === 'string')).toBe(true);
  });

  it('GET /healthz is 200 when ready', async () => {
    const r = await call(s, '/healthz');
    expect(r.status).toBe(200);
    expect(r.json()).toEqual({ status: 'ok' });
  });

  it('POST /predict with JSON returns PyTorch\'s output as JSON', async () => {
    expectPyTorchOutput(await postJson(s, SHAPE, INPUT));
  });

  it('POST /predict with a binary body returns raw float32 when asked', async () => {
    const r = await postBinary(s, SHAPE, INPUT);
    expect(r.headers.get('content-type')).toBe('application/octet-stream');
    expect(r.body.length).toBe(EXPECTED.length * 4);
    expectPyTorchOutput(r);
    // Binary in, JSON out (the default Accept).
    const j = await postBinary(s, SHAPE, INPUT, '*/*');
    expect(j.headers.get('content-type')).toMatch(/^application\/json/);
    expectPyTorchOutput(j);
    // JSON in, binary out.
    const b = await postJson(s, SHAPE, INPUT, { Accept: 'application/json;q=0.5, application/octet-stream' });
    expect(b.headers.get('content-type')).toBe('application/octet-stream');
    expectPyTorchOutput(b);
  });

  it('answers 32 concurrent requests, all correct', async () => {
    const replies = await Promise.all(Array.from({ length: 32 }, (_, i) => (i % 2 ? postJson(s, SHAPE, INPUT) : postBinary(s, SHAPE, INPUT))));
    for (const r of replies) expectPyTorchOutput(r);
  });

  it('rejects bad requests with the right status and code', async () => {
    const post = (body: string, type = 'application/json') => call(s, '/predict', { method: 'POST', headers: { 'Content-Type': type }, body });
    const n = INPUT.length;
    expectError(await post('{"shape": [2, 3'), 400, 'ERR_BAD_JSON');
    expectError(await post('[1, 2, 3]'), 400, 'ERR_BAD_JSON');
    expectError(await post(JSON.stringify({ data: Array.from(INPUT) })), 400, 'ERR_BAD_SHAPE');
    expectError(await post(JSON.stringify({ shape: [2, -3, 16, 16], data: [] })), 400, 'ERR_BAD_SHAPE');
    expectError(await post(JSON.stringify({ shape: SHAPE })), 400, 'ERR_BAD_DATA');
    expectError(await postJson(s, SHAPE, INPUT.subarray(0, n - 1)), 400, 'ERR_SIZE_MISMATCH');
    const strings: unknown[] = Array.from(INPUT);
    strings[7] = '0.5';
    expectError(await post(JSON.stringify({ shape: SHAPE, data: strings })), 400, 'ERR_BAD_DATA');
    const huge: unknown[] = Array.from(INPUT);
    huge[3] = 1e300;
    expectError(await post(JSON.stringify({ shape: SHAPE, data: huge })), 400, 'ERR_BAD_DATA');
    // A shape the model was not configured for: checked before the model sees it.
    const wrongChannels = [SHAPE[0], SHAPE[1] + 1, ...SHAPE.slice(2)];
    expectError(await postJson(s, wrongChannels, new Float32Array(wrongChannels.reduce((a, b) => a * b, 1))), 400, 'ERR_INPUT_SHAPE');
    const bigBatch = [SHAPE[0] * 2 + 1, ...SHAPE.slice(1)];
    expectError(await postBinary(s, bigBatch, new Float32Array(bigBatch.reduce((a, b) => a * b, 1))), 400, 'ERR_INPUT_SHAPE');
    // Binary bodies.
    expectError(await call(s, '/predict', { method: 'POST', headers: { 'Content-Type': 'application/octet-stream' }, body: Buffer.alloc(n * 4) }),
      400, 'ERR_BAD_SHAPE');
    expectError(await call(s, '/predict', {
      method: 'POST', headers: { 'Content-Type': 'application/octet-stream', 'X-Shape': '2,three,16,16' }, body: Buffer.alloc(n * 4),
    }), 400, 'ERR_BAD_SHAPE');
    expectError(await call(s, '/predict', {
      method: 'POST', headers: { 'Content-Type': 'application/octet-stream', 'X-Shape': SHAPE.join(',') }, body: Buffer.alloc(n * 4 - 4),
    }), 400, 'ERR_SIZE_MISMATCH');
    const nan = Float32Array.from(INPUT);
    nan[5] = NaN;
    expectError(await postBinary(s, SHAPE, nan), 400, 'ERR_BAD_DATA');
    // Media types, methods, routes.
    expectError(await post('hello', 'text/plain'), 415, 'ERR_UNSUPPORTED_MEDIA_TYPE');
    expectError(await postJson(s, SHAPE, INPUT, { Accept: 'text/html' }), 406, 'ERR_NOT_ACCEPTABLE');
    const get = await call(s, '/predict');
    expectError(get, 405, 'ERR_METHOD_NOT_ALLOWED');
    expect(get.headers.get('allow')).toBe('POST');
    expectError(await call(s, '/healthz', { method: 'POST', body: '' }), 405, 'ERR_METHOD_NOT_ALLOWED');
    expectError(await call(s, '/nope'), 404, 'ERR_NOT_FOUND');
  });

  it('answers 413 to a body over the limit, declared or streamed', async () => {
    // Declared: Content-Length over the limit (200000 bytes).
    const big = JSON.stringify({ shape: SHAPE, data: Array.from({ length: 40000 }, () => 0.123456789) });
    expect(big.length).toBeGreaterThan(200000);
    expectError(await call(s, '/predict', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: big }), 413, 'ERR_BODY_TOO_LARGE');
    // Streamed: chunked, no Content-Length; the limit is found while reading.
    const { req, reply } = rawRequest(s.port, { headers: { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' } });
    for (let i = 0; i < 5; i++) req.write(Buffer.alloc(50000, 0x20));
    req.end();
    const r = await reply;
    s.sent.set('/predict POST 413', (s.sent.get('/predict POST 413') ?? 0) + 1);
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body).error.code).toBe('ERR_BODY_TOO_LARGE');
    // The service is still fine afterwards.
    expectPyTorchOutput(await postJson(s, SHAPE, INPUT));
  });

  it('GET /report returns the whole fuse report', async () => {
    const r = await call(s, '/report');
    expect(r.status).toBe(200);
    const report = r.json() as { folded: number; skipped: number; pairs: { status: string }[]; validation: { passed: boolean } };
    expect(report.folded).toBe(folded);
    expect(report.skipped).toBe(skipped);
    expect(report.pairs.filter((p) => p.status === 'folded')).toHaveLength(folded);
    expect(report.validation.passed).toBe(true);
  });

  it('GET /metrics counts every request sent, and carries the fuse figures', async () => {
    const r = await call(s, '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = r.body.toString('utf8');
    // The request histogram: one count per (route, method, status) this test sent, except this scrape itself.
    const sent = new Map(s.sent);
    sent.set('/metrics GET 200', (sent.get('/metrics GET 200') ?? 0) - 1);
    for (const [key, count] of sent) {
      if (count === 0) continue;
      const [route, method, status] = key.split(' ');
      expect(metric(text, 'http_request_duration_seconds_count', { route, method, status }), key).toBe(count);
      expect(metric(text, 'http_request_duration_seconds_bucket', { le: '+Inf', route, method, status }), key).toBe(count);
    }
    const ok = s.sent.get('/predict POST 200')!;
    expect(ok).toBeGreaterThan(32);
    // Every 200 ran exactly one forward; no rejected request reached the model.
    expect(metric(text, 'model_forward_duration_seconds_count', { outcome: 'ok' })).toBe(ok);
    expect(metric(text, 'model_forward_duration_seconds_count', { outcome: 'error' })).toBeUndefined();
    expect(metric(text, 'http_requests_in_flight', { route: '/predict' })).toBe(0);
    expect(metric(text, 'model_queue_depth')).toBe(0);
    expect(metric(text, 'service_ready')).toBe(1);
    // Event-loop delay (prom-client's default metrics).
    expect(metric(text, 'nodejs_eventloop_lag_p99_seconds')).toBeGreaterThanOrEqual(0);
    // The fuse report as gauges.
    const fused = s.logs.find((e) => e.msg === 'fused') as LogEntry & { validation: { maxAbsError: number } };
    expect(metric(text, 'torchfold_fuse_pairs', { status: 'folded' })).toBe(folded);
    expect(metric(text, 'torchfold_fuse_pairs', { status: 'skipped' })).toBe(skipped);
    expect(metric(text, 'torchfold_fuse_validation_max_abs_error')).toBe(fused.validation.maxAbsError);
    expect(metric(text, 'torchfold_fuse_validation_passed')).toBe(1);
    expect(metric(text, 'torchfold_fuse_seconds', { phase: 'total' })).toBeGreaterThan(0);
    expect(metric(text, 'torchfold_fuse_benchmark_latency_seconds', { module: 'before' })).toBeGreaterThan(0);
    expect(metric(text, 'torchfold_fuse_benchmark_latency_seconds', { module: 'after' })).toBeGreaterThan(0);
    expect(metric(text, 'torchfold_fuse_batchnorms', { module: 'after' })).toBeDefined();
  });
});

describe('server.mjs, as loaded, shutting down', () => {
  const SLOW = 8;
  let s: Server;

  beforeAll(async () => {
    // Capacity: 1 forward at a time + 7 waiting = the SLOW uploads below.
    s = await startServer(['--model', FIXTURE.path, '--input-shape', SHAPE.join(','), '--no-fuse', '--no-shape-check',
      '--concurrency', '1', '--max-queue', String(SLOW - 1), '--drain-delay-ms', '300', '--shutdown-timeout-ms', '20000']);
    running.push(s);
  });

  it('serves the model as loaded, and lets libtorch reject a wrong shape (422 ERR_TORCH)', async () => {
    expect(s.logs.some((e) => e.msg.startsWith('fuse skipped'))).toBe(true);
    expect(s.logs.some((e) => e.msg === 'fused')).toBe(false);
    expectPyTorchOutput(await postBinary(s, SHAPE, INPUT));
    const wrong = [SHAPE[0], SHAPE[1] + 1, ...SHAPE.slice(2)];
    const r = await postJson(s, wrong, new Float32Array(wrong.reduce((a, b) => a * b, 1)));
    expectError(r, 422, 'ERR_TORCH');
    expect(r.json().error.message).not.toMatch(/Traceback/);
    expectError(await call(s, '/report'), 404, 'ERR_NO_REPORT');
  });

  it('on SIGTERM: /healthz 503, the listener closes, in-flight requests finish with 200, then the model is disposed and it exits 0', async () => {
    // SLOW requests whose bodies are held back: in flight until we finish them.
    const bytes = Buffer.from(INPUT.buffer, INPUT.byteOffset, INPUT.byteLength);
    const uploads = Array.from({ length: SLOW }, () => {
      const u = rawRequest(s.port, {
        headers: { 'Content-Type': 'application/octet-stream', 'X-Shape': SHAPE.join(','), 'Content-Length': String(bytes.length) },
      });
      u.req.write(bytes.subarray(0, 100));
      return u;
    });
    // Wait until the server holds all of them.
    for (;;) {
      const text = (await call(s, '/metrics')).body.toString('utf8');
      if (metric(text, 'http_requests_in_flight', { route: '/predict' }) === SLOW) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    // Full: one more is turned away at once.
    const over = await postJson(s, SHAPE, INPUT);
    expectError(over, 503, 'ERR_OVERLOADED');
    expect(over.headers.get('retry-after')).toBe('1');

    s.child.kill('SIGTERM');
    await s.waitLog((e) => e.msg.startsWith('draining'), 'draining');
    const health = await call(s, '/healthz');
    expect(health.status).toBe(503);
    expect(health.json()).toEqual({ status: 'draining' });
    await s.waitLog((e) => e.msg === 'stopped accepting connections', 'stopped accepting connections');
    await expect(fetch(`http://127.0.0.1:${s.port}/healthz`)).rejects.toThrow();

    // Now let the uploads finish: every one is answered, correctly.
    for (const u of uploads) u.req.end(bytes.subarray(100));
    const replies = await Promise.all(uploads.map((u) => u.reply));
    for (const r of replies) {
      expect(r.status, r.body).toBe(200);
      const j = JSON.parse(r.body) as { data: number[] };
      expect(maxAbsDiff(j.data, EXPECTED)).toBeLessThanOrEqual(ATOL);
    }
    const { code, signal } = await s.exited;
    expect({ code, signal }).toEqual({ code: 0, signal: null });
    const steps = s.logs.map((e) => e.msg);
    const order = ['shutdown started', 'stopped accepting connections', 'waiting for in-flight requests', 'in-flight requests finished',
      'connections closed', 'model disposed', 'exit'];
    const at = order.map((m) => steps.findIndex((x) => x.startsWith(m)));
    expect(at.every((i) => i >= 0), steps.join(' | ')).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(s.logs.find((e) => e.msg === 'waiting for in-flight requests')!.inFlight).toBe(SLOW);
    expect(s.logs.find((e) => e.msg === 'exit')!.code).toBe(0);
    expect(s.logs.filter((e) => e.level === 'error')).toEqual([]);
  });
});

describe('server.mjs, signalled while starting', () => {
  it('exits 0 from SIGTERM before it is ready, freeing what it made', async () => {
    const child = spawn(process.execPath, [SERVER, '--port', '0', '--model', FIXTURE.path, '--input-shape', SHAPE.join(',')], {
      cwd: ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const listening = new Promise<void>((resolve) => {
      child.stdout.setEncoding('utf8').on('data', (c: string) => { out += c; if (out.includes('"msg":"listening"')) resolve(); });
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { out += c; });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    await listening;
    child.kill('SIGTERM');
    expect(await exited, out).toBe(0);
    const logs = out.trim().split('\n').map((l) => JSON.parse(l) as LogEntry);
    expect(logs.filter((e) => e.level === 'error')).toEqual([]);
    // Usually the fuse is stopped; if the start won the race, the model is disposed like any shutdown.
    expect(logs.some((e) => e.msg === 'model disposed' || e.msg.startsWith('the start was stopped'))).toBe(true);
    expect(logs.at(-1)).toMatchObject({ msg: 'exit', code: 0 });
  });
});

describe('loadtest.mjs', () => {
  it('drives both variants and reports both rows with no errors', async () => {
    const child = spawn(process.execPath, [LOADTEST, '--model', FIXTURE.path, '--shape', SHAPE.join(','),
      '--duration', '2', '--connections', '4', '--warmup', '0', '--json', '-'], { cwd: ROOT, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => { stdout += c; });
    child.stderr.setEncoding('utf8').on('data', (c: string) => { stderr += c; });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(0);
    const result = JSON.parse(stdout) as {
      ok: boolean; problems: string[]; connections: number;
      variants: { variant: string; ok: number; requests: number; rps: number; errors: number; timeouts: number; non2xx: number;
        wrongOutputs: number; latencyMs: { p50: number; p99: number }; exit: { code: number; modelDisposed: boolean } }[];
      ratio: { rps: number; p50: number; p99: number };
    };
    expect(result.problems).toEqual([]);
    expect(result.ok).toBe(true);
    expect(result.connections).toBe(4);
    expect(result.variants.map((v) => v.variant)).toEqual(['fused', 'unfused']);
    for (const v of result.variants) {
      expect(v.ok, v.variant).toBeGreaterThan(0);
      expect(v.ok).toBe(v.requests);
      expect({ errors: v.errors, timeouts: v.timeouts, non2xx: v.non2xx, wrong: v.wrongOutputs }).toEqual({ errors: 0, timeouts: 0, non2xx: 0, wrong: 0 });
      expect(v.rps).toBeGreaterThan(0);
      expect(v.latencyMs.p99).toBeGreaterThanOrEqual(v.latencyMs.p50);
      expect(v.exit).toEqual({ code: 0, signal: null, modelDisposed: true });
    }
    for (const k of ['rps', 'p50', 'p99'] as const) expect(Number.isFinite(result.ratio[k])).toBe(true);
    // The table went to stderr (stdout carries the JSON).
    expect(stderr).toMatch(/^fused\s/m);
    expect(stderr).toMatch(/^unfused\s/m);
    expect(stderr).toMatch(/^fused\/unfused\s/m);
  });
});
