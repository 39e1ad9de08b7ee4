/**
 * Output for people while `torchfold optimize` runs: a progress bar with the
 * current file, count and ETA on a terminal; otherwise one plain line per
 * file; then a summary table.
 */
import { MultiBar, Presets, SingleBar } from 'cli-progress';
import Table from 'cli-table3';
import { fmt } from './format';
import type { InputResult, OptimizeRunReport } from './report';

export type ProgressStyle = 'bar' | 'lines';


/** The one-line account of a finished input. */
export function resultLine(r: InputResult, verbose = false): string {
  const s = r.summary;
  switch (r.status) {
    case 'failed':
      return `FAIL ${r.input}: ${r.error!.code}: ${r.error!.message.split('\n')[0]}`;
    case 'interrupted':
      return `STOP ${r.input}: interrupted, nothing written`;
    case 'up-to-date':
      return `SKIP ${r.input}: up to date (${r.output} was made from the same bytes with the same options)`;
    default: {
      const parts = [`folded ${s!.folded}`, `skipped ${s!.skipped}`, `BN ${s!.batchNormsBefore}→${s!.batchNormsAfter}`];
      if (s!.absorbed) parts.push(`absorbed ${s!.absorbed}`);
      if (s!.maxAbsError !== null) parts.push(`max err ${fmt.err(s!.maxAbsError)}`);
      if (s!.latencyBeforeMs !== null) parts.push(`${fmt.ms(s!.latencyBeforeMs)} → ${fmt.ms(s!.latencyAfterMs)} (${fmt.ratio(s!.speedup)})`);
      if (s!.chosen) parts.push(`kept ${s!.chosen}`);
      parts.push(fmt.ms(r.timings.total));
      const head = r.output ? `ok   ${r.input} -> ${r.output}` : `ok   ${r.input} (dry run)`;
      let line = `${head}  ${parts.join(', ')}`;
      if (verbose && r.report) {
        for (const p of r.report.pairs) {
          line += `\n       ${p.status === 'folded' ? 'folded ' : 'skipped'} ${p.conv || '(root)'} + ${p.norm || '(root)'}` +
            `${p.reason ? `: ${p.reason}` : ''}`;
        }
      }
      return line;
    }
  }
}

function formatEta(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
}

export class Progress {
  readonly #style: ProgressStyle;
  readonly #out: NodeJS.WritableStream;
  readonly #verbose: boolean;
  #multi: MultiBar | undefined;
  #bar: SingleBar | undefined;
  #running: string[] = [];
  #done = 0;

  constructor(options: { style: ProgressStyle; total: number; out: NodeJS.WritableStream; verbose: boolean }) {
    this.#style = options.style;
    this.#out = options.out;
    this.#verbose = options.verbose;
    if (this.#style === 'bar' && options.total > 0) {
      this.#multi = new MultiBar({
        format: (opts, params, payload: { file?: string }) => {
          const size = opts.barsize ?? 40;
          const full = Math.round(params.progress * size);
          const bar = (opts.barCompleteString ?? '').slice(0, full) + (opts.barIncompleteString ?? '').slice(0, size - full);
          const eta = params.value === 0 || !Number.isFinite(params.eta) ? '…' : formatEta(params.eta);
          return ` ${bar} ${params.value}/${params.total} | ETA ${eta} | ${payload.file ?? ''}`;
        },
        hideCursor: true, clearOnComplete: true, stopOnComplete: false, etaBuffer: 8, fps: 5,
        stream: process.stderr,
      }, Presets.shades_classic);
      this.#bar = this.#multi.create(options.total, 0, { file: '' });
    }
  }

  /** A line for people: above the bar on a terminal, else as is. */
  log(text: string): void {
    if (this.#multi) this.#multi.log(text + '\n');
    else this.#out.write(text + '\n');
  }

  start(file: string): void {
    this.#running.push(file);
    this.#bar?.update(this.#done, { file: this.#current() });
  }

  finish(r: InputResult): void {
    this.#running = this.#running.filter((f) => f !== r.input);
    this.#done++;
    if (this.#bar) {
      this.#bar.update(this.#done, { file: this.#current() });
      if (r.status === 'failed' || this.#verbose) this.log(resultLine(r, this.#verbose));
    } else {
      this.log(resultLine(r, this.#verbose));
    }
  }

  stop(): void {
    this.#multi?.stop();
    this.#multi = undefined;
    this.#bar = undefined;
  }

  #current(): string {
    if (this.#running.length <= 1) return this.#running[0] ?? '';
    return `${this.#running[0]} (+${this.#running.length - 1} more)`;
  }
}

/** The summary table: one row per input. */
export function summaryTable(report: OptimizeRunReport, color: boolean): string {
  const table = new Table({
    head: ['File', 'Status', 'Folded/skipped', 'BN before→after', 'Max error', 'Latency before', 'Latency after', 'Speedup', 'Time'],
    style: { head: color ? ['cyan'] : [], border: color ? ['grey'] : [], compact: true },
    colAligns: ['left', 'left', 'right', 'right', 'right', 'right', 'right', 'right', 'right'],
    wordWrap: true,
  });
  for (const r of report.results) {
    const s = r.summary;
    table.push([
      r.input,
      r.status === 'failed' ? `failed: ${r.error!.code}` : r.status,
      s ? `${s.folded}/${s.skipped}` : '—',
      s ? `${s.batchNormsBefore}→${s.batchNormsAfter}` : '—',
      fmt.err(s?.maxAbsError),
      fmt.ms(s?.latencyBeforeMs),
      fmt.ms(s?.latencyAfterMs),
      fmt.ratio(s?.speedup),
      r.status === 'done' || r.status === 'failed' ? fmt.ms(r.timings.total) : '—',
    ]);
  }
  return table.toString();
}

export function totalsLine(report: OptimizeRunReport): string {
  const t = report.totals;
  const codes = new Map<string, number>();
  for (const r of report.results) if (r.error) codes.set(r.error.code, (codes.get(r.error.code) ?? 0) + 1);
  const failed = t.failed ? `${t.failed} failed (${[...codes].map(([c, n]) => (n > 1 ? `${c} ×${n}` : c)).join(', ')})` : '0 failed';
  const parts = [`${t.done} ${report.dryRun ? 'analyzed' : 'done'}`, failed, `${t.upToDate} up to date`];
  if (t.interrupted) parts.push(`${t.interrupted} interrupted`);
  const shard = report.shard ? ` (shard ${report.shard.index}/${report.shard.count})` : '';
  return `${t.inputs} input${t.inputs === 1 ? '' : 's'}${shard}: ${parts.join(', ')} in ${fmt.ms(report.durationMs)}`;
}
