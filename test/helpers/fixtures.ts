/**
 * Reads the fixtures made by scripts/make_fixtures.py (real PyTorch): models,
 * their inputs and PyTorch's own outputs, and compares torchfold's outputs
 * with them.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { expect } from 'vitest';
import { DType, Tensor, TorchValue } from '../../lib';

export const ROOT = path.resolve(__dirname, '..', '..');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
export const PYTHON = '/usr/bin/python3';
/** PyTorch 1.13 (Debian's) and PyTorch 2.x (.libtorch/cuda, from scripts/setup.sh --all), each as a python and its env. */
export const PYTORCHES = {
  '1.13': { python: PYTHON, env: {} as NodeJS.ProcessEnv },
  '2.x': { python: 'python3', env: { PYTHONPATH: path.join(ROOT, '.libtorch', 'cuda') } as NodeJS.ProcessEnv },
};
/** The libtorch generation of the addon under test ('1.13' or '2.x'). */
export function generation(libtorch: string): '1.13' | '2.x' {
  return libtorch.startsWith('1.') ? '1.13' : '2.x';
}

interface TensorRef { file: string; dtype: DType; shape: number[] }
type Tree = null | boolean | number | string | Tree[] | { [key: string]: Tree };

export interface Case {
  method: string;
  mode: 'eval' | 'train';
  inputs: Tree[];
  output: Tree;
  atol?: number;
}

export interface ModelFixture {
  file: string;
  methods: string[];
  training: boolean;
  cases: Case[];
  /** PyTorch 2.x fixtures: the BatchNorm modules PyTorch counts in the model (each follows a convolution). */
  batchNorms?: number;
  /** PyTorch 2.x fixtures: how many of those BatchNorms take a conv's output (PyTorch's hooks); absent: all. */
  foldable?: number;
  /** PyTorch 2.x fixtures: an operator the model calls that libtorch 1.13 lacks. */
  needsOperator?: string;
}

interface Manifest {
  version: string;
  torch: string;
  models: Record<string, ModelFixture>;
  bad: Record<string, string>;
  torchvision_ops_library: string;
  half?: Record<string, { options: unknown; output: Tree }[]>;
}

let manifest: Manifest | undefined;

export function fixtures(): Manifest {
  manifest ??= JSON.parse(fs.readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8')) as Manifest;
  return manifest;
}

export function model(name: string): ModelFixture & { path: string } {
  const m = fixtures().models[name];
  if (!m) throw new Error(`no fixture model ${name}`);
  return { ...m, path: path.join(FIXTURES, m.file) };
}

const PYTORCH2 = path.join(FIXTURES, 'pytorch2');
let manifest2: Manifest | undefined;

/** The models PyTorch 2.x saved (scripts/make_pytorch2_fixtures.py), with their tensor files resolved. */
export function pytorch2Fixtures(): { torch: string; manifest: string; models: Record<string, ModelFixture & { path: string }>;
  half: Record<string, { options: unknown; output: Tree }[]> } {
  manifest2 ??= JSON.parse(fs.readFileSync(path.join(PYTORCH2, 'manifest.json'), 'utf8')) as Manifest;
  const models: Record<string, ModelFixture & { path: string }> = {};
  // Tensor files are named relative to pytorch2/; the readers here take them relative to FIXTURES.
  const rebase = (tree: Tree): Tree => {
    if (Array.isArray(tree)) return tree.map(rebase);
    if (!tree || typeof tree !== 'object') return tree;
    const ref = tensorRef(tree);
    if (ref) return { __tensor__: { ...ref, file: path.join('pytorch2', ref.file) } } as unknown as Tree;
    return Object.fromEntries(Object.entries(tree).map(([k, v]) => [k, rebase(v)]));
  };
  for (const [name, m] of Object.entries(manifest2.models)) {
    models[name] = { ...m, path: path.join(PYTORCH2, m.file),
      cases: m.cases.map((c) => ({ ...c, inputs: c.inputs.map(rebase), output: rebase(c.output) })) };
  }
  const half = Object.fromEntries(Object.entries(manifest2.half ?? {})
    .map(([name, sets]) => [name, sets.map((x) => ({ options: x.options, output: rebase(x.output) }))]));
  return { torch: manifest2.torch, manifest: path.join(PYTORCH2, 'manifest.json'), models, half };
}

export function badFile(name: string): string {
  return path.join(FIXTURES, fixtures().bad[name]);
}

const ARRAYS: Record<DType, { new (b: ArrayBuffer): ArrayLike<number | bigint> }> = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array,
  int8: Int8Array, int16: Int16Array, int32: Int32Array, int64: BigInt64Array,
  uint8: Uint8Array, bool: Uint8Array,
};

export function readTensorData(ref: TensorRef): ArrayLike<number | bigint> {
  const bytes = fs.readFileSync(path.join(FIXTURES, ref.file));
  const copy = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
  return new ARRAYS[ref.dtype](copy as ArrayBuffer);
}

function tensorRef(tree: Tree): TensorRef | undefined {
  if (tree && typeof tree === 'object' && !Array.isArray(tree) && '__tensor__' in tree) {
    return tree.__tensor__ as unknown as TensorRef;
  }
  return undefined;
}

/** Turns a fixture tree into the value torchfold takes (Tensors, BigInts, Maps). */
export function decode(tree: Tree): TorchValue {
  if (tree === null || typeof tree !== 'object') return tree;
  if (Array.isArray(tree)) return tree.map(decode);
  const ref = tensorRef(tree);
  if (ref) return Tensor.from(readTensorData(ref) as never, ref.shape, { dtype: ref.dtype });
  if ('__bigint__' in tree) return BigInt(tree.__bigint__ as string);
  if ('__intdict__' in tree) {
    return new Map((tree.__intdict__ as [number, Tree][]).map(([k, v]) => [k, decode(v)]));
  }
  const out: Record<string, TorchValue> = {};
  for (const [k, v] of Object.entries(tree)) out[k] = decode(v);
  return out;
}

export function inputsOf(c: Case): TorchValue[] {
  return c.inputs.map(decode);
}

/** Largest |a - b| over two tensors' elements, by value (bools and ints compared exactly; float16 and bfloat16 decoded). */
export function maxAbsDiff(actual: Tensor, ref: TensorRef): number {
  const a = actual.toValues();
  const e = Tensor.from(readTensorData(ref) as never, ref.shape, { dtype: ref.dtype }).toValues();
  expect(a.length).toBe(e.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(Number(a[i]) - Number(e[i]));
    if (Number.isNaN(d)) return Infinity;
    worst = Math.max(worst, d);
  }
  return worst;
}

/** Asserts that torchfold's output equals PyTorch's, structurally and numerically. */
export function expectMatches(actual: TorchValue, expected: Tree, atol = 1e-5, where = 'output'): void {
  const ref = tensorRef(expected);
  if (ref) {
    expect(actual, where).toBeInstanceOf(Tensor);
    const t = actual as Tensor;
    expect(t.dtype, `${where} dtype`).toBe(ref.dtype);
    expect(t.shape, `${where} shape`).toEqual(ref.shape);
    const exact = !ref.dtype.startsWith('float') && ref.dtype !== 'bfloat16';
    expect(maxAbsDiff(t, ref), `${where} max abs diff`).toBeLessThanOrEqual(exact ? 0 : atol);
    return;
  }
  if (expected === null) { expect(actual, where).toBeNull(); return; }
  if (Array.isArray(expected)) {
    expect(Array.isArray(actual), `${where} is an array`).toBe(true);
    const arr = actual as TorchValue[];
    expect(arr.length, `${where} length`).toBe(expected.length);
    expected.forEach((e, i) => expectMatches(arr[i], e, atol, `${where}[${i}]`));
    return;
  }
  if (typeof expected === 'object') {
    if ('__bigint__' in expected) { expect(actual, where).toBe(BigInt(expected.__bigint__ as string)); return; }
    if ('__intdict__' in expected) {
      expect(actual, where).toBeInstanceOf(Map);
      const map = actual as Map<unknown, TorchValue>;
      const entries = expected.__intdict__ as [number, Tree][];
      expect([...map.keys()]).toEqual(entries.map(([k]) => k));
      for (const [k, v] of entries) expectMatches(map.get(k) as TorchValue, v, atol, `${where}[${k}]`);
      return;
    }
    const obj = actual as Record<string, TorchValue>;
    expect(Object.keys(obj).sort(), `${where} keys`).toEqual(Object.keys(expected).sort());
    for (const [k, v] of Object.entries(expected)) expectMatches(obj[k], v, atol, `${where}.${k}`);
    return;
  }
  if (typeof expected === 'number' && !Number.isInteger(expected)) {
    expect(actual as number, where).toBeCloseTo(expected, 6);
    return;
  }
  expect(actual, where).toEqual(expected);
}

/**
 * Loads `file` in real PyTorch and runs the fixture model's cases on it: PyTorch 1.13
 * and the base fixtures unless told otherwise.
 */
export function checkInPyTorch(file: string, name: string,
  { pytorch = '1.13', manifest = path.join(FIXTURES, 'manifest.json') }: { pytorch?: keyof typeof PYTORCHES; manifest?: string } = {}):
  { ok: boolean; cases: number; maxAbsDiff: number; methods: string[]; error?: string } {
  let out: string;
  const py = PYTORCHES[pytorch];
  try {
    out = execFileSync(py.python, [path.join(ROOT, 'scripts', 'check_torchscript.py'), manifest, file, name],
      { encoding: 'utf8', env: { ...process.env, ...py.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    out = (e as { stdout?: string }).stdout ?? '';
    if (!out.trim()) throw e;
  }
  return JSON.parse(out.trim().split('\n').pop() as string);
}

export function tmpDir(prefix: string): string {
  const dir = path.join(ROOT, '.tmp', `${prefix}-${process.pid}-${Date.now()}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
