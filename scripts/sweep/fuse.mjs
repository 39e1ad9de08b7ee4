// Fuses every model of a sweep folder (scripts/sweep/make_models.py) with validation and prints,
// per model: BatchNorms that run, foldable pairs (from PyTorch's hooks), folded, skipped, unpaired,
// replaced, rank guards, site copies, the validation error, and each reason; "<<< MISSED" marks
// fewer folds than foldable pairs, "<<< ACCOUNT" pairs + unpaired that do not cover every BatchNorm.
// Usage: node scripts/sweep/fuse.mjs OUTDIR [name-substring ...]   (after npm run build:ts)
import * as tf from '../../dist/index.js';
import fs from 'fs';
const dir = process.argv[2];
const man = JSON.parse(fs.readFileSync(`${dir}/manifest.json`, 'utf8'));
const only = process.argv.slice(3);
for (const [name, e] of Object.entries(man)) {
  if (only.length && !only.some((o) => name.includes(o))) continue;
  const n = e.shape.reduce((a, b) => a * b, 1);
  const x = tf.Tensor.from(new Float32Array(n).map((_, i) => Math.sin(i * 0.37)), e.shape);
  const t0 = Date.now();
  try {
    const m = await tf.load(e.file);
    const { report } = await m.fuse({ validate: { inputs: [x] } });
    const reasons = {};
    for (const p of report.pairs) if (p.status !== 'folded') { const k = p.reason.replace(/'[^']*'/g, "'…'").slice(0, 140); reasons[k] = (reasons[k] ?? 0) + 1; }
    for (const u of report.unpaired) { const k = 'U: ' + u.reason.replace(/'[^']*'/g, "'…'").slice(0, 140); reasons[k] = (reasons[k] ?? 0) + 1; }
    const paired = new Set(report.pairs.map((p) => p.norm + '|' + p.normKind)).size;
    const flag = report.folded < e.foldable ? ' <<< MISSED' : '';
    const acct = paired + report.unpaired.length === e.norms ? '' : ` <<< ACCOUNT ${paired}+${report.unpaired.length}!=${e.norms}`;
    console.log(`${name}: norms ${e.norms} foldable ${e.foldable} folded ${report.folded} skipped ${report.skipped} unpaired ${report.unpaired.length} replaced ${report.replaced.length} guard ${report.pairs.filter(p=>p.rankGuard).length} copy ${report.pairs.filter(p=>p.siteCopy).length} err ${report.validation.maxAbsError.toExponential(2)} ${report.validation.passed ? 'ok' : 'FAIL'} ${((Date.now() - t0) / 1000).toFixed(1)}s${flag}${acct}`);
    for (const [k, v] of Object.entries(reasons)) console.log(`    ${v} × ${k}`);
    m.dispose?.();
  } catch (err) { console.log(`${name}: ERROR ${err.code} ${String(err.message).split('\n')[0].slice(0, 200)}`); }
}
