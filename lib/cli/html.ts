/**
 * A self-contained HTML page for an optimize run report (`torchfold optimize --html`):
 * header, per-input table and an inline SVG latency chart. No scripts, no external resources.
 */
import { DASH, fmt, isNum } from './format';
import type { InputResult, OptimizeRunReport, ResolvedOptions, ResultStatus } from './report';

/** Escapes text for use in HTML element content and quoted attribute values. */
export function escapeHtml(value: string | number | boolean | null | undefined): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);
}
const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

function fmtShape(shape: readonly number[]): string {
  return shape.length === 0 ? 'scalar' : shape.join('×');
}

const STATUS_CLASS: Record<ResultStatus, string> = {
  'done': 's-done', 'failed': 's-failed', 'up-to-date': 's-uptodate', 'interrupted': 's-interrupted',
};

function badge(status: ResultStatus): string {
  const cls = STATUS_CLASS[status] ?? 's-unknown';
  return `<span class="badge ${cls}">${escapeHtml(status)}</span>`;
}

/** A long path shortened from the left, for chart labels. */
function shorten(text: string, max: number): string {
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`;
}

const STYLE = `
:root { color-scheme: light dark; --fg: #1b1f24; --muted: #59636e; --bg: #ffffff; --panel: #f6f8fa; --border: #d1d9e0;
  --before: #9aa4ae; --after: #1f6feb; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --info: #59636e; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6edf3; --muted: #9198a1; --bg: #0d1117; --panel: #151b23; --border: #3d444d;
    --before: #6e7781; --after: #4493f8; --ok: #3fb950; --bad: #f85149; --warn: #d29922; --info: #9198a1; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1600px; padding: 1.5rem; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; } h2 { font-size: 1.15rem; margin: 2rem 0 .75rem; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.muted { color: var(--muted); }
.banner { padding: .6rem .9rem; border-radius: 6px; margin: .75rem 0; font-weight: 600; border: 1px solid; }
.banner.interrupted { color: var(--bad); border-color: var(--bad); }
.banner.dry { color: var(--warn); border-color: var(--warn); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; margin: 1rem 0;
  padding: .75rem 1rem; background: var(--panel); border: 1px solid var(--border); border-radius: 6px; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; border: 1px solid var(--border); border-radius: 6px; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: .4rem .6rem; border-bottom: 1px solid var(--border); text-align: left; vertical-align: top; white-space: nowrap; }
th { background: var(--panel); font-weight: 600; } tr:last-child td { border-bottom: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.file { white-space: normal; min-width: 14rem; max-width: 32rem; overflow-wrap: anywhere; }
tr.err-row td { white-space: normal; border-top: none; padding-top: 0; }
.err { margin-top: .3rem; color: var(--bad); white-space: pre-wrap; }
.badge { display: inline-block; padding: 0 .5rem; border-radius: 999px; font-size: 12px; font-weight: 600; color: #fff; }
.s-done { background: var(--ok); } .s-failed { background: var(--bad); } .s-uptodate { background: var(--info); }
.s-interrupted, .s-unknown { background: var(--warn); }
svg.chart { width: 100%; height: auto; max-width: 960px; }
svg.chart text { fill: var(--fg); font: 12px system-ui, sans-serif; }
svg.chart .bar-before { fill: var(--before); } svg.chart .bar-after { fill: var(--after); }
svg.chart .axis { stroke: var(--border); } svg.chart text.speedup { font-weight: 700; }
`;

function renderOptions(o: ResolvedOptions): string {
  const validate = o.validate
    ? `atol ${o.validate.atol}, rtol ${o.validate.rtol}, on failure: ${o.validate.onFailure}`
    : 'off';
  const shapes = o.inputShapes.length === 0
    ? DASH
    : o.inputShapes.map((s, i) => `${fmtShape(s)}${o.inputDtypes[i] ? ` (${o.inputDtypes[i]})` : ''}`).join(', ');
  const rows: [string, string][] = [
    ['Mode', o.mode],
    ['Constants', o.constants ? 'on' : 'off'],
    ['Optimize', o.optimize ? 'on' : 'off'],
    ['Validate', validate],
    ['Bench', o.bench === null ? 'off' : `${o.bench} iterations`],
    ['Device', o.device],
    ['Input shapes', shapes],
  ];
  if (o.modules) rows.push(['Modules', o.modules.map((m) => m.join('.')).join(', ')]);
  if (o.treatTrainingAsEval) rows.push(['Training as eval', 'on']);
  return rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('\n');
}

function renderHeader(r: OptimizeRunReport): string {
  const t = r.totals;
  const banners: string[] = [];
  if (r.interrupted) {
    banners.push('<div class="banner interrupted" role="alert">Interrupted: the run was stopped before every input finished.</div>');
  }
  if (r.dryRun) banners.push('<div class="banner dry" role="note">Dry run: inputs were analyzed, nothing was written.</div>');
  const shard = r.shard ? `<dt>Shard</dt><dd>${escapeHtml(`${r.shard.index} of ${r.shard.count}`)}</dd>` : '';
  return `<header>
<h1>torchfold optimize report</h1>
${banners.join('\n')}
<dl class="meta">
<dt>Started</dt><dd>${escapeHtml(r.startedAt)} <span class="muted">(took ${escapeHtml(fmt.duration(r.durationMs))})</span></dd>
<dt>Versions</dt><dd>torchfold ${escapeHtml(r.torchfold)}, libtorch ${escapeHtml(r.libtorch)}, Node ${escapeHtml(r.node)} on ${escapeHtml(r.platform)}</dd>
<dt>Threads / jobs</dt><dd>${escapeHtml(r.threads)} / ${escapeHtml(r.jobs)}</dd>
${shard}
<dt>Totals</dt><dd>${escapeHtml(t.inputs)} inputs: ${escapeHtml(t.done)} done, ${escapeHtml(t.failed)} failed, ${escapeHtml(t.upToDate)} up-to-date, ${escapeHtml(t.interrupted)} interrupted</dd>
${renderOptions(r.options)}
<dt>Command</dt><dd><code>${escapeHtml(r.command.join(' '))}</code></dd>
</dl>
</header>`;
}

function renderRow(res: InputResult): string {
  const s = res.summary;
  const written = res.status === 'done' || res.status === 'up-to-date';
  const cells = [
    `<td class="file"><code>${escapeHtml(res.input)}</code></td>`,
    `<td>${badge(res.status)}</td>`,
    `<td class="num">${s ? `${s.folded} / ${s.skipped}` : DASH}</td>`,
    `<td class="num">${s ? `${s.batchNormsBefore} → ${s.batchNormsAfter}` : DASH}</td>`,
    `<td class="num">${fmt.err(s?.maxAbsError)}</td>`,
    `<td class="num">${fmt.msValue(s?.latencyBeforeMs)}</td>`,
    `<td class="num">${fmt.msValue(s?.latencyAfterMs)}</td>`,
    `<td class="num">${fmt.ratio(s?.speedup)}</td>`,
    `<td class="num">${escapeHtml(fmt.duration(res.timings?.total))}</td>`,
    `<td>${res.output === null || !written ? `<span class="muted">${DASH}</span>` : `<code>${escapeHtml(res.output)}</code>`}</td>`,
  ];
  // An error gets a full-width row of its own under its file.
  const err = res.error
    ? `\n<tr class="err-row"><td colspan="${cells.length}"><div class="err"><code>${escapeHtml(res.error.code)}</code> ` +
      `${escapeHtml(res.error.message)}</div></td></tr>`
    : '';
  return `<tr>${cells.join('')}</tr>${err}`;
}

function renderTable(r: OptimizeRunReport): string {
  if (r.results.length === 0) return '<p class="muted">No inputs.</p>';
  const head = ['File', 'Status', 'Pairs folded / skipped', 'BN before → after', 'Max abs error',
    'Latency before (ms)', 'Latency after (ms)', 'Speedup', 'Time', 'Output'];
  return `<div class="table-wrap"><table>
<thead><tr>${head.map((h) => `<th scope="col">${escapeHtml(h)}</th>`).join('')}</tr></thead>
<tbody>
${r.results.map(renderRow).join('\n')}
</tbody>
</table></div>`;
}

interface ChartRow { label: string; before: number; after: number; speedup: number | null }

function renderChart(r: OptimizeRunReport): string {
  const rows: ChartRow[] = [];
  for (const res of r.results) {
    const s = res.summary;
    if (s && isNum(s.latencyBeforeMs) && isNum(s.latencyAfterMs)) {
      const speedup = isNum(s.speedup) ? s.speedup : s.latencyAfterMs > 0 ? s.latencyBeforeMs / s.latencyAfterMs : null;
      rows.push({ label: res.input, before: s.latencyBeforeMs, after: s.latencyAfterMs, speedup });
    }
  }
  const heading = '<h2 id="latency-chart">Latency before/after per model</h2>';
  if (rows.length === 0) {
    return `${heading}\n<p class="muted">No latencies were measured. Run with <code>--bench N</code> (or <code>--optimize</code>) to see this chart.</p>`;
  }
  const labelW = 220, barMaxW = 460, valueW = 160, barH = 14, gap = 3, groupGap = 14, top = 30;
  const width = labelW + barMaxW + valueW;
  const groupH = barH * 2 + gap;
  const height = top + rows.length * (groupH + groupGap) + 4;
  const max = Math.max(...rows.flatMap((row) => [row.before, row.after]));
  const scale = (v: number): number => (max > 0 ? (Math.max(0, v) / max) * barMaxW : 0);
  const parts: string[] = [
    '<title>Latency before/after per model</title>',
    `<desc>Median latency in milliseconds of each model before (grey) and after (colour) optimization, on a linear scale from 0 to ${escapeHtml(fmt.msValue(max))} ms.</desc>`,
    `<rect class="bar-before" x="${labelW}" y="6" width="12" height="12"/><text x="${labelW + 18}" y="16">before</text>`,
    `<rect class="bar-after" x="${labelW + 80}" y="6" width="12" height="12"/><text x="${labelW + 98}" y="16">after</text>`,
    `<line class="axis" x1="${labelW}" y1="${top - 4}" x2="${labelW}" y2="${height - 2}"/>`,
  ];
  rows.forEach((row, i) => {
    const y = top + i * (groupH + groupGap);
    const wb = scale(row.before), wa = scale(row.after);
    parts.push(
      `<g><title>${escapeHtml(row.label)}: ${escapeHtml(fmt.msValue(row.before))} ms → ${escapeHtml(fmt.msValue(row.after))} ms (${escapeHtml(fmt.ratio(row.speedup))})</title>`,
      `<text x="${labelW - 8}" y="${y + groupH / 2 + 4}" text-anchor="end">${escapeHtml(shorten(row.label, 30))}</text>`,
      `<rect class="bar-before" x="${labelW}" y="${y}" width="${wb.toFixed(1)}" height="${barH}"/>`,
      `<text x="${(labelW + wb + 6).toFixed(1)}" y="${y + barH - 3}">${escapeHtml(fmt.msValue(row.before))} ms</text>`,
      `<rect class="bar-after" x="${labelW}" y="${y + barH + gap}" width="${wa.toFixed(1)}" height="${barH}"/>`,
      `<text x="${(labelW + wa + 6).toFixed(1)}" y="${y + 2 * barH + gap - 3}">${escapeHtml(fmt.msValue(row.after))} ms` +
        `${row.speedup === null ? '' : ` <tspan class="speedup">${escapeHtml(fmt.ratio(row.speedup))}</tspan>`}</text></g>`,
    );
  });
  return `${heading}
<svg class="chart" role="img" aria-label="Latency before/after per model: median milliseconds before and after optimization for ${rows.length} model${rows.length === 1 ? '' : 's'}" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}" xmlns="http://www.w3.org/2000/svg">
${parts.join('\n')}
</svg>`;
}

/** Renders the report as one self-contained HTML5 page (inline CSS only, no scripts or external resources). */
export function renderHtml(report: OptimizeRunReport): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>torchfold optimize report</title>
<style>${STYLE}</style>
</head>
<body>
${renderHeader(report)}
<main>
<h2>Results</h2>
${renderTable(report)}
${renderChart(report)}
</main>
<footer><p class="muted">Report schema ${escapeHtml(report.schema)}; finished ${escapeHtml(report.finishedAt)}.</p></footer>
</body>
</html>
`;
}
