#!/usr/bin/env node
'use strict';
/**
 * libtorch 1.13 and 2.x side by side: bench/run.js once with Debian's 1.13
 * (build-debian/) and once with the default 2.x (build/), one after the
 * other in the same session on the same machine, then one table of both.
 *
 *   node bench/generations.js [bench/run.js arguments]    (npm run bench:generations)
 *
 * Without arguments: every model, traced, batch 1 and 8. Writes the table to
 * bench/results/<time>-generations.md beside the two runs' JSON.
 */
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const RESULTS = path.join(__dirname, 'results');
const GENERATIONS = [['debian', 'libtorch 1.13'], ['default', 'libtorch 2.x']];

function run(libtorch, args) {
  const note = path.join(os.tmpdir(), `torchfold-bench-${process.pid}-${libtorch}`);
  const r = spawnSync(process.execPath, [path.join(__dirname, 'run.js'), '--libtorch', libtorch, ...args],
    { stdio: 'inherit', env: { ...process.env, TORCHFOLD_BENCH_RESULT: note } });
  if (r.status !== 0) {
    console.error(`bench/generations: the ${libtorch} run failed (${r.status ?? r.signal})`);
    process.exit(1);
  }
  const file = fs.readFileSync(note, 'utf8').trim();
  fs.rmSync(note);
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const ms = (v) => (v == null ? '—' : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const ratio = (v) => (v == null ? '—' : v.toFixed(2));

/** The markdown table: per model, form and batch, each generation's latencies and ratios. */
function table(runs) {
  const [old, now] = runs;
  const lines = [
    `${now.machine.cpu} (${now.machine.cpus} CPUs), ${now.machine.threads} intra-op thread(s); ` +
      `libtorch ${old.machine.libtorch} then ${now.machine.libtorch}, one session (${old.startedAt} to ` +
      `${new Date(Date.parse(now.startedAt) + now.durationMs).toISOString()}).`,
    '',
    '| model | form | batch | loaded ms 1.13 | loaded ms 2.x | tf.fold 1.13 | tf.fold 2.x | tf.optimize 1.13 (kept) | tf.optimize 2.x (kept) | saved+loaded 1.13 | saved+loaded 2.x |',
    '|---|---|---:|---:|---:|---:|---:|---|---|---|---|',
  ];
  for (const a of old.results) {
    const b = now.results.find((x) => x.model === a.model && x.form === a.form && x.batch === a.batch);
    if (!b) continue;
    const row = (r, v) => r.rows.find((y) => y.variant === v) ?? {};
    const kept = (r, v) => `${ms(row(r, v).medianMs)} ms, ${ratio(row(r, v).ratio)}× (${row(r, v).detail ?? '—'})`;
    lines.push(`| ${a.model} | ${a.form} | ${a.batch} | ${ms(row(a, 'loaded').medianMs)} | ${ms(row(b, 'loaded').medianMs)} | ` +
      `${ms(row(a, 'tf.fold').medianMs)} ms, ${ratio(row(a, 'tf.fold').ratio)}× | ${ms(row(b, 'tf.fold').medianMs)} ms, ${ratio(row(b, 'tf.fold').ratio)}× | ` +
      `${kept(a, 'tf.optimize')} | ${kept(b, 'tf.optimize')} | ${kept(a, 'tf.optimize saved')} | ${kept(b, 'tf.optimize saved')} |`);
  }
  lines.push('', 'Ratios are to `loaded` of the same generation, paired by round. "kept" is the candidate `fuse({ optimize })` chose.');
  // The reference rows: PyTorch in its own process (each generation's own PyTorch) and onnxruntime-node (the same in both runs).
  const med = (r, v) => ms(r?.rows.find((y) => y.variant === v)?.medianMs);
  if (now.results.some((r) => r.rows.some((y) => y.variant === 'pytorch' || y.variant === 'ort'))) {
    lines.push('', 'Medians in ms. PyTorch timed in its own process; onnxruntime-node in the run\'s rounds and alone (each run has its own).', '',
      '| model | form | batch | pytorch 1.13 | pytorch 2.x | pytorch frozen+ofi 1.13 | pytorch frozen+ofi 2.x | pytorch frozen+llga 2.x | ort (1.13 run) | ort (2.x run) | ort alone (2.x run) |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const a of old.results) {
      const b = now.results.find((x) => x.model === a.model && x.form === a.form && x.batch === a.batch);
      if (!b) continue;
      lines.push(`| ${a.model} | ${a.form} | ${a.batch} | ${med(a, 'pytorch')} | ${med(b, 'pytorch')} | ${med(a, 'pytorch frozen+ofi')} | ` +
        `${med(b, 'pytorch frozen+ofi')} | ${med(b, 'pytorch frozen+llga')} | ${med(a, 'ort')} | ${med(b, 'ort')} | ${med(b, 'ort alone')} |`);
    }
  }
  if (old.extras?.threads && now.extras?.threads) {
    lines.push('', `Threads (${now.extras.threads.model}, batch 1, loaded / tf.fold ms):`, '',
      '| threads | 1.13 loaded | 1.13 tf.fold | 2.x loaded | 2.x tf.fold |', '|---:|---:|---:|---:|---:|');
    for (const r of old.extras.threads.rows) {
      const s = now.extras.threads.rows.find((x) => x.threads === r.threads) ?? {};
      lines.push(`| ${r.threads} | ${ms(r.loadedMs)} | ${ms(r.foldMs)} | ${ms(s.loadedMs)} | ${ms(s.foldMs)} |`);
    }
  }
  return lines.join('\n');
}

function main(argv) {
  const args = argv.length ? argv : ['--forms', 'traced', '--batches', '1,8'];
  const runs = GENERATIONS.map(([name, label]) => {
    console.log(`\n=== bench/generations: ${label} ===\n`);
    return run(name, args);
  });
  const md = table(runs);
  fs.mkdirSync(RESULTS, { recursive: true });
  const out = path.join(RESULTS, `${runs[0].startedAt.replace(/[:.]/g, '-')}-generations.md`);
  fs.writeFileSync(out, `${md}\n`);
  console.log(`\n## libtorch 1.13 and 2.x side by side\n\n${md}\n\n(${path.relative(ROOT, out)})`);
}

main(process.argv.slice(2));
