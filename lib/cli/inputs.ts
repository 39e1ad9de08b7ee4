/**
 * Which files `torchfold optimize` works on and where each result goes:
 * arguments (files, folders, globs) expanded into a sorted, de-duplicated
 * list, a deterministic shard of it, and one output path per input.
 */
import * as fs from 'fs';
import * as path from 'path';
import { globSync, isDynamicPattern } from 'tinyglobby';
import { UsageError } from './usage';

export const DEFAULT_GLOB = '**/*.{pt,pth,ptl}';

export interface Input {
  /** Absolute path. */
  file: string;
  /** Shown to people and used as the shard key: relative to the working directory when inside it. */
  display: string;
  /** Path below the argument it was found under (folder or glob base); the basename for a file argument. */
  relative: string;
}

export type OutputMode =
  | { kind: 'beside' }
  | { kind: 'file'; file: string }
  | { kind: 'dir'; dir: string }
  | { kind: 'in-place'; backup: boolean };

const toPosix = (p: string) => p.split(path.sep).join('/');

export function displayPath(abs: string, cwd = process.cwd()): string {
  const rel = path.relative(cwd, abs);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? toPosix(rel) : abs;
}

/** The leading part of a glob without wildcards: the folder its matches are mirrored from. */
function globBase(pattern: string): string {
  const parts = toPosix(pattern).split('/');
  const fixed: string[] = [];
  for (const part of parts.slice(0, -1)) {
    if (isDynamicPattern(part)) break;
    fixed.push(part);
  }
  return fixed.length ? fixed.join('/') || '/' : '.';
}

/** `*.fused.pt` files are what a run without --out-dir writes beside its inputs. */
const isOwnOutput = (name: string) => /\.fused\.[^.]+$/.test(name);

export interface DiscoverOptions {
  glob: string;
  /** Skip *.fused.* files in folders (outputs of an earlier run written beside their inputs). */
  skipOwnOutputs: boolean;
  /** A folder whose contents are never inputs (the --out-dir). */
  exclude?: string;
  cwd?: string;
}

/** Expands the arguments; a missing path or a glob that matches nothing is a usage error. */
export function discover(args: string[], o: DiscoverOptions): Input[] {
  const cwd = o.cwd ?? process.cwd();
  const found = new Map<string, Input>();
  const add = (abs: string, relative: string) => {
    let real = abs;
    try { real = fs.realpathSync(abs); } catch { /* kept as given; load() reports it */ }
    if (o.exclude && (real === o.exclude || real.startsWith(o.exclude + path.sep))) return;
    if (!found.has(real)) found.set(real, { file: abs, display: displayPath(abs, cwd), relative: toPosix(relative) });
  };
  for (const arg of args) {
    const abs = path.resolve(cwd, arg);
    let st: fs.Stats | undefined;
    try { st = fs.statSync(abs); } catch { st = undefined; }
    if (st?.isDirectory()) {
      const matches = globSync(o.glob, { cwd: abs, onlyFiles: true, dot: false, followSymbolicLinks: true });
      for (const m of matches) {
        if (o.skipOwnOutputs && isOwnOutput(path.basename(m))) continue;
        add(path.join(abs, m), m);
      }
    } else if (st) {
      add(abs, path.basename(abs));  // an explicit file is taken whatever its name
    } else if (isDynamicPattern(toPosix(arg))) {
      const base = path.resolve(cwd, globBase(arg));
      const matches = globSync(toPosix(arg), { cwd, onlyFiles: true, dot: false, absolute: true });
      if (matches.length === 0) throw new UsageError(`No files match ${arg}`);
      for (const m of matches) {
        if (o.skipOwnOutputs && isOwnOutput(path.basename(m))) continue;
        add(path.resolve(m), path.relative(base, path.resolve(m)));
      }
    } else {
      throw new UsageError(`No such file or folder: ${arg}`);
    }
  }
  // Code-unit order, not locale order: the same on every machine.
  return [...found.values()].sort((a, b) => (a.display < b.display ? -1 : a.display > b.display ? 1 : 0));
}

/** The real path of a file or folder that may not exist yet: its nearest existing ancestor resolved, the rest appended. */
export function realPathOf(p: string): string {
  const abs = path.resolve(p);
  try {
    return fs.realpathSync(abs);
  } catch {
    const parent = path.dirname(abs);
    return parent === abs ? abs : path.join(realPathOf(parent), path.basename(abs));
  }
}

/** A file to write: not a folder, and in a folder that exists. */
export function checkWritableFile(file: string, flag: string): string {
  const abs = path.resolve(file);
  let st: fs.Stats | undefined;
  try { st = fs.statSync(abs); } catch { st = undefined; }
  if (st?.isDirectory()) throw new UsageError(`${flag} ${file} is a folder; give a file name`);
  let dir: fs.Stats | undefined;
  try { dir = fs.statSync(path.dirname(abs)); } catch { dir = undefined; }
  if (!dir?.isDirectory()) throw new UsageError(`${flag} ${file}: no such folder ${path.dirname(abs)}`);
  return abs;
}

/** Parses --shard i/n (1-based, like jest --shard). */
export function parseShard(value: string): { index: number; count: number } {
  const m = /^(\d+)\/(\d+)$/.exec(value.trim());
  const index = m ? Number(m[1]) : NaN, count = m ? Number(m[2]) : NaN;
  if (!m || count < 1 || index < 1 || index > count) {
    throw new UsageError(`--shard takes i/n with 1 <= i <= n (shards are numbered from 1), e.g. --shard 2/4; got '${value}'`);
  }
  return { index, count };
}

/** Shard i of n: every n-th input of the sorted list, starting at the i-th. The n shards cover the list exactly once. */
export function takeShard<T>(inputs: T[], shard: { index: number; count: number } | null): T[] {
  if (!shard) return inputs;
  return inputs.filter((_, k) => k % shard.count === shard.index - 1);
}

/** NAME.fused.EXT beside the input. */
function besideName(file: string): string {
  const ext = path.extname(file);
  return ext ? file.slice(0, -ext.length) + '.fused' + ext : file + '.fused.pt';
}

export function outputFor(input: Input, mode: OutputMode): string {
  switch (mode.kind) {
    case 'beside': return besideName(input.file);
    case 'file': return mode.file;
    case 'dir': return path.join(mode.dir, ...input.relative.split('/'));
    case 'in-place': return input.file;
  }
}

/** Checks the plan before any work: one output per input, and no input overwritten unless --in-place. */
export function checkPlan(inputs: Input[], mode: OutputMode): void {
  if (mode.kind === 'file' && inputs.length !== 1) {
    throw new UsageError(`--output names one file, but ${inputs.length} inputs were found; use --out-dir for several`);
  }
  if (mode.kind === 'in-place') return;
  const real = (p: string) => { try { return fs.realpathSync(p); } catch { return path.resolve(p); } };
  const inputSet = new Set(inputs.map((i) => real(i.file)));
  const seen = new Map<string, string>();
  for (const input of inputs) {
    const out = outputFor(input, mode);
    const key = real(out);
    if (inputSet.has(key)) {
      throw new UsageError(`The output for ${input.display} would overwrite an input (${displayPath(out)}); ` +
        'choose another --output/--out-dir, or pass --in-place to replace inputs on purpose');
    }
    const other = seen.get(key);
    if (other) throw new UsageError(`${other} and ${input.display} would both be written to ${displayPath(out)}`);
    seen.set(key, input.display);
  }
}
