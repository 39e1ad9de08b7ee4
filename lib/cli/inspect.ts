/** `torchfold inspect`: what a model holds and which conv -> BatchNorm pairs would fold. */
import * as fs from 'fs';
import * as path from 'path';
import { load } from '../module';
import type { PairReport, UnpairedReport } from '../report';
import { versions } from '../runtime';
import type { TensorInfo } from '../binding';
import { writeFileAtomic } from './batch';
import type { Io } from './optimize';
import { checkWritableFile } from './inputs';
import { checkDevice, UsageError } from './usage';

export interface InspectFlags {
  method: string;
  mode: 'fold' | 'tune';
  constants?: boolean;
  modules?: string[][];
  treatTrainingAsEval?: boolean;
  inputShape?: number[][];
  device: string;
  verify?: boolean;
  isolate?: boolean;
  json?: boolean;
  dot?: string;
}

const DTYPE_BYTES: Record<string, number> = {
  float64: 8, int64: 8, complex64: 8, float32: 4, int32: 4, float16: 2, bfloat16: 2, int16: 2, int8: 1, uint8: 1, bool: 1,
};

function tally(list: TensorInfo[]) {
  const byDtype: Record<string, { count: number; bytes: number }> = {};
  let count = 0, bytes = 0;
  for (const t of list) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    const b = n * (DTYPE_BYTES[t.dtype] ?? 4);
    count += n;
    bytes += b;
    byDtype[t.dtype] = { count: (byDtype[t.dtype]?.count ?? 0) + n, bytes: (byDtype[t.dtype]?.bytes ?? 0) + b };
  }
  return { tensors: list.length, count, bytes, byDtype };
}

const human = (bytes: number) => (bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(1)} KiB`);
const shortType = (t: string) => t.split('.').pop() ?? t;

export async function inspectCommand(file: string, f: InspectFlags, io: Io): Promise<number> {
  const abs = path.resolve(file);
  const dotFile = f.dot && f.dot !== '-' ? checkWritableFile(f.dot, '--dot') : undefined;
  checkDevice(f.device);
  const module = await load(abs, { device: f.device, verify: Boolean(f.verify), isolate: Boolean(f.isolate) });
  try {
    if (!module.methods.includes(f.method)) {
      throw new UsageError(`--method ${f.method}: the model has no such method (it has ${module.methods.join(', ')})`);
    }
    const report = await module.inspect({
      method: f.method, mode: f.mode, constants: Boolean(f.constants), treatTrainingAsEval: Boolean(f.treatTrainingAsEval),
      ...(f.modules ? { modules: f.modules } : {}), ...(f.inputShape ? { inputShapes: f.inputShape } : {}),
    });
    const { graph: _graph, dot, ...analysis } = report;
    const modules = module.namedModules();
    const params = tally(module.parameters()), buffers = tally(module.buffers());
    if (f.dot) {
      if (f.dot === '-') io.stdout.write(dot);
      else await writeFileAtomic(dotFile!, dot);
    }
    if (f.json) {
      const out = {
        file: abs, bytes: fs.statSync(abs).size, torchfold: versions.torchfold,
        methods: module.methods, training: module.training,
        parameters: params, buffers, modules, ...analysis,
      };
      if (f.dot !== '-') io.stdout.write(JSON.stringify(out, null, 2) + '\n');
      return 0;
    }
    if (f.dot === '-') return 0;
    const w = (s = '') => io.stdout.write(s + '\n');
    w(`${file}  (${human(fs.statSync(abs).size)}, libtorch ${versions.libtorch})`);
    w(`Methods:     ${module.methods.join(', ')}`);
    w(`Mode:        ${module.training ? 'training (pairs are skipped unless --treat-training-as-eval)' : 'eval'}`);
    w(`Parameters:  ${params.count.toLocaleString('en-US')} in ${params.tensors} tensors, ${human(params.bytes)}` +
      ` (${Object.entries(params.byDtype).map(([d, v]) => `${d} ${human(v.bytes)}`).join(', ') || 'none'})`);
    w(`Buffers:     ${buffers.count.toLocaleString('en-US')} in ${buffers.tensors} tensors, ${human(buffers.bytes)}`);
    w(`BatchNorm:   ${analysis.batchNorms.before} run; ${f.mode === 'tune' ? 'tune' : 'fold'} would leave ${analysis.batchNorms.before - analysis.folded} ` +
      `(${analysis.folded} pair${analysis.folded === 1 ? '' : 's'} would ${f.mode === 'tune' ? 'be tuned' : 'fold'}, ${analysis.skipped} skipped)`);
    if (analysis.unpaired.length) {
      w(`Unpaired:    ${analysis.unpaired.length} normalization${analysis.unpaired.length === 1 ? '' : 's'} follow no conv/linear (nothing to fold into)`);
    }
    if (analysis.absorbed.length) {
      w(`Constants:   ${analysis.absorbed.filter((a) => a.status === 'folded').length} of ${analysis.absorbed.length} ops with a constant would be absorbed`);
    }
    w();
    w('Module tree (pairs marked):');
    const byConv = new Map<string, PairReport[]>(), byNorm = new Map<string, PairReport[]>();
    for (const p of analysis.pairs) {
      byConv.set(p.conv, [...(byConv.get(p.conv) ?? []), p]);
      byNorm.set(p.norm, [...(byNorm.get(p.norm) ?? []), p]);
    }
    const unpairedByNorm = new Map<string, UnpairedReport[]>();
    for (const u of analysis.unpaired) unpairedByNorm.set(u.norm, [...(unpairedByNorm.get(u.norm) ?? []), u]);
    for (const m of modules) {
      const depth = m.path ? m.path.split('.').length : 0;
      const name = m.path ? m.path.split('.').pop() : '(root)';
      const marks: string[] = [];
      for (const p of byConv.get(m.path) ?? []) {
        const norm = p.norm || '(root)';
        marks.push(p.status === 'folded' ? `-> would fold ${norm}` : `-> ${norm}: skipped, ${p.reason}`);
      }
      for (const p of byNorm.get(m.path) ?? []) {
        if (p.conv !== m.path) marks.push(p.status === 'folded' ? `<- folds into ${p.conv || '(root)'}` : '<- left (see its conv)');
      }
      for (const u of unpairedByNorm.get(m.path) ?? []) marks.push(`left: ${u.reason}`);
      w(`${'  '.repeat(depth + 1)}${name}  ${shortType(m.type)}${marks.length ? '  ' + marks.join('; ') : ''}`);
    }
    const orphans = analysis.pairs.filter((p) => !modules.some((m) => m.path === p.conv));
    for (const p of orphans) {
      w(`  ${p.kind} ${p.conv} + ${p.norm}: ${p.status === 'folded' ? 'would fold' : `skipped, ${p.reason}`}`);
    }
    for (const u of analysis.unpaired.filter((x) => !modules.some((m) => m.path === x.norm))) {
      w(`  ${u.normKind} ${u.norm || '(root)'}: left, ${u.reason}`);
    }
    if (f.dot) w(`\nDOT of ${f.method}: ${f.dot}`);
    return 0;
  } finally {
    await module.dispose();
  }
}
