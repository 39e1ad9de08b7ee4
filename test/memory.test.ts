// Native memory is reported to V8 (napi_adjust_external_memory), so the GC
// weighs what a module or tensor holds in libtorch.
//
// How it is read: on Node 20 (V8 11.3) process.memoryUsage().external and
// v8.getHeapStatistics().external_memory count ArrayBuffer backing stores only;
// they do NOT include what addons report with napi_adjust_external_memory. The
// counter V8 schedules GCs from is returned by napi_adjust_external_memory
// itself, so a ten-line probe addon (compiled here with `cc`, no headers needed)
// reads it by adjusting by 0. That counter also holds ArrayBuffer bytes, so
// each delta subtracts the change of process.memoryUsage().arrayBuffers, after
// full GCs, leaving what native code reported.
//
// Every expected value is computed from the model or tensor under test (shapes
// and dtypes), never typed in.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as v8 from 'v8';
import * as vm from 'vm';
import { createRequire } from 'module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load, ScriptModule, Tensor } from '../lib';
import type { TensorInfo } from '../lib';
import { badFile, expectMatches, inputsOf, model } from './helpers/fixtures';


// Other reporters running during a window are V8 itself (tens of bytes seen)
// and ArrayBuffers (subtracted). 4 KiB is far below the smallest amount checked
// (the forward outputs, 20 x 4000 bytes) and far above the noise.
const TOLERANCE = 4096;

const ELEMENT_BYTES: Record<string, number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int8: 1, int16: 2, int32: 4, int64: 8, uint8: 1, bool: 1,
};

function bytesOf(infos: TensorInfo[]): number {
  return infos.reduce((sum, t) => {
    const size = ELEMENT_BYTES[t.dtype];
    if (size === undefined) throw new Error(`no element size for dtype ${t.dtype} (${t.name})`);
    return sum + t.shape.reduce((a, b) => a * b, 1) * size;
  }, 0);
}

const moduleBytes = (m: ScriptModule) => bytesOf([...m.parameters(), ...m.buffers()]);
const tensorBytes = (t: Tensor) => t.numel * ELEMENT_BYTES[t.dtype];

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

let dir: string;
let probe: { reported(): number };

interface Snapshot { reported: number; arrayBuffers: number }

/** Full GCs with turns of the event loop between (finalizers run there), then the counters. */
async function snapshot(): Promise<Snapshot> {
  for (let i = 0; i < 3; i++) {
    gc();
    await new Promise((r) => setImmediate(r));
  }
  return { reported: probe.reported(), arrayBuffers: process.memoryUsage().arrayBuffers };
}

/** Native bytes reported between two snapshots (ArrayBuffer changes taken out). */
const nativeDelta = (a: Snapshot, b: Snapshot) => (b.reported - a.reported) - (b.arrayBuffers - a.arrayBuffers);

function expectAbout(actual: number, expected: number, what: string): void {
  expect(Math.abs(actual - expected), `${what}: reported ${actual} bytes, expected ${expected}`).toBeLessThanOrEqual(TOLERANCE);
}

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-memprobe-'));
  const built = (createRequire(__filename)('../scripts/stress/memprobe.js') as { buildProbe(d: string): { file?: string; error?: string } })
    .buildProbe(dir);
  if (!built.file) throw new Error(built.error);
  probe = createRequire(__filename)(built.file) as typeof probe;
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('native memory reported to V8', () => {
  it('the probe reads the live counter (an ArrayBuffer moves it by its size)', async () => {
    const before = probe.reported();
    const size = 3 << 20;
    const held = new ArrayBuffer(size);
    expect(probe.reported() - before).toBeGreaterThanOrEqual(size);
    expect(held.byteLength).toBe(size);
  });

  it('load reports the parameter and buffer bytes; dispose takes them back', async () => {
    const s0 = await snapshot();
    const m = await load(model('resnet18_traced').path);
    const expected = moduleBytes(m);
    expect(expected).toBeGreaterThan(10 << 20);  // ResNet-18: 11.7M parameters
    const s1 = await snapshot();
    expectAbout(nativeDelta(s0, s1), expected, 'after load');
    await m.dispose();
    const s2 = await snapshot();
    expectAbout(nativeDelta(s0, s2), 0, 'after dispose');
  });

  it('Tensor.from and forward outputs report their bytes; dispose and GC take them back', async () => {
    const f = model('resnet18_traced');
    const m = await load(f.path);
    const [input] = inputsOf(f.cases[0]) as Tensor[];
    const s0 = await snapshot();

    const data = new Float32Array(1 << 20).fill(0.5);
    const big = Tensor.from(data, [1024, 1024]);
    const s1 = await snapshot();
    expectAbout(nativeDelta(s0, s1), tensorBytes(big), 'Tensor.from');
    big.dispose();
    expectAbout(nativeDelta(s0, await snapshot()), 0, 'Tensor.from disposed');

    const outputs: Tensor[] = [];
    for (let i = 0; i < 20; i++) outputs.push(await m.forward(input) as Tensor);
    const s2 = await snapshot();
    expectAbout(nativeDelta(s0, s2), outputs.reduce((s, t) => s + tensorBytes(t), 0), '20 forward outputs');
    expectMatches(outputs[19], f.cases[0].output, f.cases[0].atol);
    for (const t of outputs) t.dispose();
    expectAbout(nativeDelta(s0, await snapshot()), 0, 'outputs disposed');

    // Outputs never disposed: their finalizers give the bytes back after GC.
    let sample = 0;
    for (let i = 0; i < 20; i++) sample = tensorBytes(await m.forward(input) as Tensor);
    expect(sample).toBeGreaterThan(0);
    expectAbout(nativeDelta(s0, await snapshot()), 0, 'outputs collected by GC');

    await m.dispose();
    input.dispose();
  });

  it('fuse() and clone() report their new modules; a failed load reports nothing', async () => {
    const m = await load(model('resnet18_traced').path);
    const s0 = await snapshot();
    const { module: fused, report } = await m.fuse();
    expect(report.pairs.filter((p) => p.status === 'folded').length).toBeGreaterThan(0);
    expectAbout(nativeDelta(s0, await snapshot()), moduleBytes(fused), 'fused module');
    const copy = await m.clone();
    expectAbout(nativeDelta(s0, await snapshot()), moduleBytes(fused) + moduleBytes(copy), 'fused + clone');
    await fused.dispose();
    await copy.dispose();
    expectAbout(nativeDelta(s0, await snapshot()), 0, 'both disposed');

    await expect(load(badFile('truncated'))).rejects.toMatchObject({ code: 'ERR_NOT_TORCHSCRIPT' });
    expectAbout(nativeDelta(s0, await snapshot()), 0, 'after a failed load');
    await m.dispose();
  });
});
