#!/usr/bin/env node
/**
 * The built-in demo: loads a TorchScript model (by default the small ResNet-style
 * model shipped in models/demo.pt), runs it, fuses its conv -> BatchNorm pairs
 * and prints the report: what was folded or skipped and why, the error the
 * fold added (against the unfused module), the time of each phase and the
 * speed before and after.
 *
 *   node dist/demo.js [model.pt] [--shape 1,3,64,64] [--runs 20] [--threads N] [--out fused.pt]
 */
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from './binding';
import { load, ScriptModule } from './module';
import { getNumThreads, setNumThreads, versions } from './runtime';
import { Tensor } from './tensor';
import { TorchValue } from './values';
import { seededNormal } from './fuse';
import { FuseReport } from './report';

interface DemoArgs { model: string; shape: number[]; runs: number; threads?: number; out?: string }

function parseArgs(argv: string[]): DemoArgs {
  const root = packageRoot();
  const meta = JSON.parse(fs.readFileSync(path.join(root, 'models', 'demo.json'), 'utf8')) as { input: { shape: number[] } };
  const args: DemoArgs = { model: path.join(root, 'models', 'demo.pt'), shape: meta.input.shape, runs: 20 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--shape') args.shape = argv[++i].split(',').map(Number);
    else if (a === '--runs') args.runs = Number(argv[++i]);
    else if (a === '--threads') args.threads = Number(argv[++i]);
    else if (a === '--out') args.out = argv[++i];
    else if (a === '--help' || a === '-h') {
      console.log('usage: node dist/demo.js [model.pt] [--shape 1,3,64,64] [--runs 20] [--threads N] [--out fused.pt]');
      process.exit(0);
    } else args.model = a;
  }
  return args;
}


function summarize(value: TorchValue): string {
  if (!(value instanceof Tensor)) return JSON.stringify(value);
  const data = value.toValues() as Float32Array;  // float16/bfloat16 decoded, not their bits
  let min = Infinity, max = -Infinity, sum = 0;
  for (const v of data) { min = Math.min(min, v); max = Math.max(max, v); sum += v; }
  const row = value.shape.length === 2 ? Array.from(data.subarray(0, value.shape[1])) : [];
  const argmax = row.length ? row.indexOf(Math.max(...row)) : -1;
  return `Tensor ${value.dtype} [${value.shape.join(', ')}]  min ${min.toFixed(4)}  max ${max.toFixed(4)}  ` +
    `mean ${(sum / data.length).toFixed(4)}${argmax >= 0 ? `  argmax(row 0) ${argmax}` : ''}`;
}

function describeModule(m: ScriptModule, file: string): void {
  const modules = m.namedModules();
  const params = m.parameters();
  const count = params.reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
  const bns = modules.filter((x) => /BatchNorm/.test(x.type)).length;
  const convs = modules.filter((x) => /\.Conv(Transpose)?[123]d$/.test(x.type)).length;
  console.log(`model      ${file} (${(fs.statSync(file).size / 1024).toFixed(0)} KiB)`);
  console.log(`class      ${modules[0]?.type ?? '?'}`);
  console.log(`methods    ${m.methods.join(', ')}`);
  console.log(`modules    ${modules.length} (${convs} convolutions, ${bns} BatchNorm)`);
  console.log(`parameters ${count.toLocaleString('en-US')} in ${params.length} tensors, on ${m.device}, ` +
    `${m.training ? 'training' : 'eval'} mode`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.threads) setNumThreads(args.threads);
  console.log(`torchfold ${versions.torchfold}, libtorch ${versions.libtorch}, ${getNumThreads()} intra-op thread(s)`);
  let t0 = performance.now();
  const m = await load(args.model);
  const loadMs = performance.now() - t0;
  describeModule(m, args.model);
  const n = args.shape.reduce((a, b) => a * b, 1);
  const input = Tensor.from(seededNormal(n), args.shape);
  t0 = performance.now();
  const out = await m.forward(input);
  const firstMs = performance.now() - t0;
  const times: number[] = [];
  for (let i = 0; i < args.runs; i++) {
    t0 = performance.now();
    await m.forward(input);
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`input      Tensor float32 [${args.shape.join(', ')}] (seeded normal)`);
  console.log(`output     ${summarize(out)}`);
  console.log(`timing     load ${loadMs.toFixed(1)} ms, first forward ${firstMs.toFixed(1)} ms, ` +
    `median of ${args.runs} forwards ${times[Math.floor(times.length / 2)]?.toFixed(2)} ms`);
  await fuseAndReport(m, args);
  await m.dispose();
}

function printReport(report: FuseReport): void {
  console.log(`\nfuse       ${report.folded} of ${report.pairs.length} conv -> BatchNorm pairs folded; ` +
    `BatchNorms that run: ${report.batchNorms.before} -> ${report.batchNorms.after}`);
  for (const p of report.pairs) {
    const line = `  ${p.status === 'folded' ? 'folded ' : 'skipped'} ${p.kind.padEnd(16)} ${(p.conv || '<root>').padEnd(22)} -> ` +
      `${p.normKind} ${p.norm || '<root>'}`;
    console.log(p.reason ? `${line}\n           reason: ${p.reason}` : line);
  }
  const v = report.validation;
  if (v) {
    console.log(`error      max abs ${v.maxAbsError.toExponential(2)}, max rel ${v.maxRelError.toExponential(2)} ` +
      `against the unfused module (${v.passed ? 'within' : 'OVER'} atol ${v.atol}, rtol ${v.rtol})`);
  }
  const t = report.timings;
  console.log(`phases     analyze ${t.analyze.toFixed(1)} ms, fold ${t.fold.toFixed(1)} ms, rewrite ${t.rewrite.toFixed(1)} ms, ` +
    `validate ${t.validate.toFixed(1)} ms, benchmark ${t.benchmark.toFixed(1)} ms, total ${t.total.toFixed(1)} ms`);
  const b = report.benchmark;
  if (b) {
    console.log(`speed      median ${b.before.medianMs.toFixed(2)} ms -> ${b.after.medianMs.toFixed(2)} ms ` +
      `(p10 ${b.before.p10Ms.toFixed(2)} -> ${b.after.p10Ms.toFixed(2)}, p90 ${b.before.p90Ms.toFixed(2)} -> ` +
      `${b.after.p90Ms.toFixed(2)}): ${b.speedup.toFixed(3)}x, ${b.iterations} interleaved runs, ${b.threads} thread(s)`);
  }
}

async function fuseAndReport(m: ScriptModule, args: DemoArgs): Promise<void> {
  const { module, report } = await m.fuse({
    validate: { inputs: [args.shape] },
    benchmark: { inputs: [args.shape], iterations: Math.max(args.runs, 5), warmup: 3 },
  });
  printReport(report);
  if (args.out) {
    await module.save(args.out);
    console.log(`saved      ${args.out}`);
  }
  await module.dispose();
}

main().catch((e: unknown) => {
  const err = e as Error & { code?: string };
  console.error(`torchfold demo failed${err.code ? ` [${err.code}]` : ''}: ${err.message}`);
  process.exit(1);
});
