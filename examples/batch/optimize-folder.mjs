#!/usr/bin/env node
// @ts-check
/**
 * Folds conv → BatchNorm pairs in every TorchScript checkpoint (*.pt, *.pth) under IN_DIR through the torchfold
 * API: load → fuse → save → dispose, a few files at a time. The tree is mirrored under OUT_DIR; inputs are only
 * read. A JSON report is written at the end, also after Ctrl-C. Run it with --help for the options.
 * Exit code: 0 all files ok, 1 some failed, 2 usage error, 130 stopped by Ctrl-C (143 by SIGTERM).
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { load, TorchfoldError, versions } from 'torchfold';

const USAGE = `usage: node optimize-folder.mjs IN_DIR OUT_DIR [options]
       node optimize-folder.mjs --demo OUT_DIR [options]

  --shape 1,3,64,64   a sample input of forward (repeat it for a forward with several inputs);
                      each fused module is checked against its original on seeded random data,
                      and pairs that move the outputs past the tolerance are left unfolded
  --validate          fail such a file instead (ERR_VALIDATION); needs --shape
  --bench N           time N forwards before and after fusing; needs --shape
  --report FILE       the JSON report (default: OUT_DIR/report.json)
  --concurrency N     files in progress at once (default 1)
  --demo              take IN_DIR to be torchfold's own models/ folder (demo.pt), with its input shape
  -h, --help          this text`;

class UsageError extends Error {}

/**
 * @typedef {{ inDir: string, outDir: string, shapes: number[][], strict: boolean, bench: number,
 *   report: string, concurrency: number }} Args
 * @typedef {{ input: string, output: string | null, status: 'ok' | 'failed' | 'interrupted' | 'not-started',
 *   error: { code: string, message: string } | null, pairs: number, folded: number,
 *   skipped: { conv: string, norm: string, reason: string }[], maxAbsError: number | null,
 *   validationPassed: boolean | null, speedup: number | null,
 *   timings: { loadMs: number, fuseMs: number, saveMs: number, totalMs: number, fuse: object | null },
 *   sizes: { input: number | null, output: number | null } }} FileResult
 */

/** @param {string | undefined} text @param {string} flag @param {number} fallback */
function positiveInt(text, flag, fallback) {
  if (text === undefined) return fallback;
  if (!/^[1-9]\d*$/.test(text)) throw new UsageError(`${flag} takes a whole number >= 1, not '${text}'`);
  return Number(text);
}

/** @param {string[]} argv @returns {Args} */
function parseCommandLine(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true, strict: true,
      options: {
        shape: { type: 'string', multiple: true }, validate: { type: 'boolean' }, bench: { type: 'string' },
        report: { type: 'string' }, concurrency: { type: 'string' }, demo: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    throw new UsageError(/** @type {Error} */ (e).message);
  }
  const { values: v, positionals } = parsed;
  if (v.help) { process.stdout.write(USAGE + '\n'); process.exit(0); }
  let shapeTexts = v.shape ?? [];
  let inDir;
  if (v.demo) {
    if (positionals.length !== 1) throw new UsageError('--demo takes one folder: OUT_DIR');
    // The package resolves itself by name, installed or in its own repository.
    const root = path.dirname(createRequire(import.meta.url).resolve('torchfold/package.json'));
    inDir = path.join(root, 'models');
    if (!shapeTexts.length) {
      const meta = JSON.parse(fs.readFileSync(path.join(inDir, 'demo.json'), 'utf8'));
      shapeTexts = [meta.input.shape.join(',')];
    }
  } else {
    if (positionals.length !== 2) throw new UsageError(`expected IN_DIR and OUT_DIR, got ${positionals.length} argument(s)`);
    inDir = positionals[0];
  }
  const outDir = positionals[positionals.length - 1];
  const shapes = shapeTexts.map((s) => {
    if (!/^\d+(,\d+)*$/.test(s)) throw new UsageError(`--shape takes sizes separated by commas, e.g. 1,3,224,224; not '${s}'`);
    const dims = s.split(',').map(Number);
    if (dims.reduce((a, b) => a * b, 1) > 2 ** 26) throw new UsageError(`--shape ${s} is over 2^26 elements`);
    return dims;
  });
  if (v.validate && !shapes.length) throw new UsageError('--validate needs a sample input: add --shape');
  if (v.bench !== undefined && !shapes.length) throw new UsageError('--bench needs a sample input: add --shape');
  if (!fs.statSync(inDir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`IN_DIR is not a folder: ${inDir}`);
  if (fs.statSync(outDir, { throwIfNoEntry: false })?.isDirectory() === false) throw new UsageError(`OUT_DIR is not a folder: ${outDir}`);
  if (realPath(inDir) === realPath(outDir)) throw new UsageError('OUT_DIR must differ from IN_DIR: inputs are never overwritten');
  return {
    inDir, outDir, shapes, strict: Boolean(v.validate), bench: positiveInt(v.bench, '--bench', 0),
    report: v.report ?? path.join(outDir, 'report.json'), concurrency: positiveInt(v.concurrency, '--concurrency', 1),
  };
}

/** The real path of a folder that may not exist yet. @param {string} p */
function realPath(p) {
  return fs.existsSync(p) ? fs.realpathSync(p) : path.resolve(p);
}

/** *.pt and *.pth under root (paths relative to it, sorted), leaving out the folder `skip`. @param {string} root @param {string} skip */
function findCheckpoints(root, skip) {
  /** @type {string[]} */
  const found = [];
  const walk = (/** @type {string} */ rel) => {
    for (const entry of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const child = path.join(rel, entry.name);
      if (entry.isDirectory()) {
        if (realPath(path.join(root, child)) !== skip) walk(child);
      } else if (/\.pth?$/i.test(entry.name) && fs.statSync(path.join(root, child), { throwIfNoEntry: false })?.isFile()) {
        found.push(child);
      }
    }
  };
  walk('');
  return found.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** Milliseconds to a tenth. @param {number} ms */
const round = (ms) => Math.round(ms * 10) / 10;

/**
 * One checkpoint: load, fuse, save, and free both modules whatever happens.
 * @param {FileResult} r @param {Args} args @param {AbortSignal} signal
 */
async function optimizeOne(r, args, signal) {
  const rel = path.relative(args.inDir, r.input);
  const output = path.join(args.outDir, rel);
  const start = performance.now();
  let mark = start;
  const lap = () => { const now = performance.now(), ms = now - mark; mark = now; return round(ms); };
  /** @type {import('torchfold').ScriptModule | undefined} */ let original;
  /** @type {import('torchfold').ScriptModule | undefined} */ let fused;
  try {
    r.sizes.input = fs.statSync(r.input).size;
    original = await load(r.input);
    r.timings.loadMs = lap();
    if (signal.aborted) throw signal.reason;
    const inputs = args.shapes;
    const { module, report } = await original.fuse({
      signal,
      validate: inputs.length ? { inputs, onFailure: args.strict ? 'throw' : 'unfold' } : undefined,
      benchmark: args.bench ? { inputs, iterations: args.bench } : undefined,
    });
    fused = module;
    r.timings.fuseMs = lap();
    r.timings.fuse = Object.fromEntries(Object.entries(report.timings).map(([k, ms]) => [k, round(ms)]));
    r.pairs = report.pairs.length;
    r.folded = report.folded;
    r.skipped = report.pairs.filter((p) => p.status === 'skipped').map((p) => ({ conv: p.conv, norm: p.norm, reason: p.reason ?? '' }));
    r.maxAbsError = report.validation?.maxAbsError ?? null;
    r.validationPassed = report.validation?.passed ?? null;
    r.speedup = report.benchmark?.speedup ?? null;
    // Once fused, the file is finished even if Ctrl-C comes now: the save is atomic.
    fs.mkdirSync(path.dirname(output), { recursive: true });
    await fused.save(output);
    r.timings.saveMs = lap();
    r.output = output;
    r.sizes.output = fs.statSync(output).size;
    r.status = 'ok';
  } catch (e) {
    const err = /** @type {Error & { code?: string }} */ (e);
    if (signal.aborted && err?.name === 'AbortError') {
      r.status = 'interrupted';
    } else {
      r.status = 'failed';
      const code = err instanceof TorchfoldError ? err.code : (err?.code ?? 'ERR_UNEXPECTED');
      r.error = { code, message: String(err?.message ?? err) };
    }
  } finally {
    await fused?.dispose();
    await original?.dispose();
    r.timings.totalMs = round(performance.now() - start);
  }
}

/** `[3/10] a/b.pt  folded 12/12  max err 3e-7  1.6x  412 ms`, or the failure with its code. @param {FileResult} r @param {Args} args */
function progressLine(r, args) {
  const name = path.relative(args.inDir, r.input);
  if (r.status === 'failed') return `${name}  FAILED ${r.error?.code}: ${r.error?.message.split('\n')[0]}`;
  if (r.status === 'interrupted') return `${name}  interrupted, nothing written`;
  const parts = [name, `folded ${r.folded}/${r.pairs}`];
  if (r.maxAbsError !== null) parts.push(`max err ${r.maxAbsError === 0 ? '0' : r.maxAbsError.toExponential(0)}`);
  if (r.speedup !== null) parts.push(`${r.speedup.toFixed(2)}x`);
  parts.push(`${Math.round(r.timings.totalMs)} ms`);
  return parts.join('  ');
}

/** Writes the whole file or leaves the old one: a temporary file in the same folder, then a rename. @param {string} file @param {unknown} value */
function writeJsonAtomic(file, value) {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    fs.writeFileSync(tmp, JSON.stringify(value, null, 2) + '\n');
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

async function main() {
  /** @type {Args} */
  let args;
  try {
    args = parseCommandLine(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`error: ${e.message}\n\n${USAGE}\n`);
    return 2;
  }
  const files = findCheckpoints(args.inDir, realPath(args.outDir));
  if (!files.length) {
    process.stderr.write(`error: no *.pt or *.pth files under ${args.inDir}\n`);
    return 2;
  }
  const startedAt = new Date();
  /** @type {FileResult[]} */
  const results = files.map((rel) => ({
    input: path.join(args.inDir, rel), output: null, status: 'not-started', error: null, pairs: 0, folded: 0, skipped: [],
    maxAbsError: null, validationPassed: null, speedup: null,
    timings: { loadMs: 0, fuseMs: 0, saveMs: 0, totalMs: 0, fuse: null }, sizes: { input: null, output: null },
  }));
  if (results.some((r) => path.resolve(r.input) === path.resolve(args.report))) {
    process.stderr.write(`error: --report ${args.report} is one of the inputs\n`);
    return 2;
  }

  // Ctrl-C: no new file starts, fuse() calls in progress stop, the report is still written.
  const controller = new AbortController();
  /** @type {NodeJS.Signals | null} */ let stoppedBy = null;
  const onSignal = (/** @type {NodeJS.Signals} */ sig) => {
    if (stoppedBy) process.exit(sig === 'SIGTERM' ? 143 : 130); // a second one quits at once
    stoppedBy = sig;
    process.stderr.write(`${sig}: stopping after the files in progress (nothing partial is written); again to quit at once\n`);
    controller.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  let next = 0, done = 0;
  const worker = async () => {
    while (next < results.length && !controller.signal.aborted) {
      const r = results[next++];
      await optimizeOne(r, args, controller.signal);
      process.stderr.write(`[${++done}/${results.length}] ${progressLine(r, args)}\n`);
    }
  };
  await Promise.all(Array.from({ length: Math.min(args.concurrency, results.length) }, worker));

  const count = (/** @type {string} */ s) => results.filter((r) => r.status === s).length;
  const sum = (/** @type {(r: FileResult) => number | null} */ f) => results.reduce((n, r) => n + (f(r) ?? 0), 0);
  const finishedAt = new Date();
  const report = {
    versions: { ...versions, node: process.version },
    inDir: path.resolve(args.inDir), outDir: path.resolve(args.outDir),
    options: { shapes: args.shapes, validate: args.shapes.length ? (args.strict ? 'throw' : 'unfold') : null, bench: args.bench || null, concurrency: args.concurrency },
    startedAt: startedAt.toISOString(), finishedAt: finishedAt.toISOString(), durationMs: finishedAt.getTime() - startedAt.getTime(),
    interrupted: stoppedBy !== null,
    totals: {
      files: results.length, ok: count('ok'), failed: count('failed'), interrupted: count('interrupted'), notStarted: count('not-started'),
      pairs: sum((r) => r.pairs), folded: sum((r) => r.folded), skipped: sum((r) => r.skipped.length),
      inputBytes: sum((r) => r.sizes.input), outputBytes: sum((r) => r.sizes.output),
    },
    files: results,
  };
  let code = stoppedBy ? (stoppedBy === 'SIGTERM' ? 143 : 130) : report.totals.failed ? 1 : 0;
  try {
    writeJsonAtomic(args.report, report);
  } catch (e) {
    process.stderr.write(`error: could not write the report ${args.report}: ${/** @type {Error} */ (e).message}\n`);
    code ||= 1;
  }
  const t = report.totals;
  process.stderr.write(`${t.ok} ok, ${t.failed} failed${stoppedBy ? `, ${t.interrupted + t.notStarted} not done (${stoppedBy})` : ''}; ` +
    `${t.folded} of ${t.pairs} pairs folded; report: ${args.report}\n`);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

process.exitCode = await main();
