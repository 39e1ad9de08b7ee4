#!/usr/bin/env node
'use strict';
// npm run stress: torchfold under bad files, load, faults and long runs, in one
// table. Minutes, not part of npm test (the fast, deterministic parts of each
// scenario are in the test suite).
//
//   node scripts/stress/run.js [--quick] [--seed N] [--only corpus,load,faults,memory]
//                              [--corpus DIR] [--json FILE]
//
// --seed      seed for the mutants, kill times and inputs (default 1; the test
//             fixtures use seed 1, so any other seed tries files the tests never saw)
// --corpus    also (instead of making mutants) open every file below DIR: your own bad files
// --quick     smaller counts (about a minute in all)
// --json      where to write the rows (default bench/results/stress-<time>.json)
// Exit code 0 when every scenario met its bar, 1 otherwise.
const fs = require('fs');
const os = require('os');
const path = require('path');
const Table = require('cli-table3');
const { ROOT } = require('./common');

const SCENARIOS = ['corpus', 'load', 'faults', 'memory'];

function parseArgs(argv) {
  const o = { quick: false, seed: 1, only: SCENARIOS, corpus: null, json: null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--quick') o.quick = true;
    else if (a === '--seed') {
      o.seed = Number(value());
      if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw new Error('--seed takes an integer >= 0');
    } else if (a === '--only') {
      o.only = value().split(',').map((s) => s.trim()).filter(Boolean);
      const bad = o.only.filter((s) => !SCENARIOS.includes(s));
      if (bad.length) throw new Error(`--only takes names from ${SCENARIOS.join(', ')}; got ${bad.join(', ')}`);
    } else if (a === '--corpus') {
      o.corpus = path.resolve(value());
      if (!fs.existsSync(o.corpus) || !fs.statSync(o.corpus).isDirectory()) throw new Error(`--corpus: no folder ${o.corpus}`);
    } else if (a === '--json') o.json = path.resolve(value());
    else if (a === '-h' || a === '--help') {
      process.stdout.write(fs.readFileSync(__filename, 'utf8').split('\n').slice(2, 16).map((l) => l.replace(/^\/\/ ?/, '')).join('\n') + '\n');
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const fmt = (v, digits = 1) => (v === null || v === undefined ? '-' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : String(v));

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`stress: ${e.message}`);
    process.exit(2);
  }
  if (!process.env.TORCHFOLD_ADDON && !fs.existsSync(path.join(ROOT, 'dist', 'index.js'))) {
    console.error('stress: dist/ is missing; run npm run setup first (npm run stress does).');
    process.exit(2);
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-stress-'));
  const ctx = {
    root: ROOT, dist: path.join(ROOT, 'dist'), tmp, seed: o.seed, quick: o.quick, corpus: o.corpus,
    log: (line) => process.stderr.write(`  ${line}\n`),
  };
  const tf = require(ctx.dist);
  const started = Date.now();
  const rows = [];
  process.stderr.write(`torchfold stress: seed ${o.seed}${o.quick ? ', quick' : ''}; libtorch ${tf.versions.libtorch}, ` +
    `${os.cpus().length} CPUs, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Node ${process.version}\n`);
  for (const name of o.only) {
    const file = path.join(__dirname, `${name}.js`);
    if (!fs.existsSync(file)) {
      rows.push({ scenario: name, load: '', faults: 0, badInputs: 0, crashes: 0, dataLost: 0, rssGrowthPct: null, maxDelayMs: null, ok: false, notes: `not run: ${file} is missing` });
      continue;
    }
    process.stderr.write(`- ${name}\n`);
    const t0 = Date.now();
    try {
      const got = await require(file).run(ctx);
      for (const r of got) rows.push({ ...r, group: name });
    } catch (e) {
      rows.push({ scenario: name, load: '', faults: 0, badInputs: 0, crashes: 1, dataLost: 0, rssGrowthPct: null, maxDelayMs: null, ok: false,
        notes: `the scenario itself failed: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' / ') : e}` });
    }
    process.stderr.write(`  (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
  }
  fs.rmSync(tmp, { recursive: true, force: true });

  const table = new Table({
    head: ['#', 'scenario', 'load held', 'faults', 'bad inputs', 'crashes', 'data lost', 'RSS growth', 'max loop delay', 'ok'],
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  rows.forEach((r, i) => table.push([i + 1, r.scenario, r.load, fmt(r.faults), fmt(r.badInputs), fmt(r.crashes), fmt(r.dataLost),
    r.rssGrowthPct === null || r.rssGrowthPct === undefined ? '-' : `${fmt(r.rssGrowthPct, 2)}%`,
    r.maxDelayMs === null || r.maxDelayMs === undefined ? '-' : `${fmt(r.maxDelayMs)} ms`, r.ok ? 'yes' : 'NO']));
  process.stdout.write(`${table.toString()}\n`);
  rows.forEach((r, i) => process.stdout.write(`${i + 1}. ${r.notes}\n`));
  const failed = rows.filter((r) => !r.ok).length;
  const seconds = (Date.now() - started) / 1000;
  process.stdout.write(`\n${rows.length} rows, ${failed} not ok, ${seconds.toFixed(0)} s\n`);

  const out = o.json || path.join(ROOT, 'bench', 'results', `stress-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify({
    seed: o.seed, quick: o.quick, corpus: o.corpus, libtorch: tf.versions.libtorch, node: process.version,
    cpus: os.cpus().length, seconds, rows,
  }, null, 1));
  process.stderr.write(`rows written to ${path.relative(process.cwd(), out)}\n`);
  process.exit(failed ? 1 : 0);
}

main();
