// The three builds scripts/setup.sh --all makes, each against its own libtorch on
// a machine that has all three: build/ (the default, pip's libtorch 2.x CPU),
// build-debian/ (Debian's 1.13.1) and build-cuda/ (pip's 2.14.1, the CUDA 13
// build). For each: the addon's NEEDED and RUNPATH entries resolve into the
// libtorch its record names and nowhere else, and it loads and runs a model
// saved by PyTorch 2.x in a process of its own. The CUDA build, on a machine
// without a GPU, says so.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { pytorch2Fixtures, ROOT } from './helpers/fixtures';

interface Record {
  libtorch: { version: string; source: string; root: string; libDir: string; cxx11Abi: number; cuda: boolean };
  needed: string[];
  runpath: string[];
}

const BUILDS = [
  { name: 'build', what: 'the default, libtorch 2.x CPU', cuda: false },
  { name: 'build-debian', what: "Debian's libtorch 1.13", cuda: false },
  { name: 'build-cuda', what: "pip's libtorch 2.14 with CUDA", cuda: true },
];
// npm test (scripts/run-tests.js) makes every build; a missing one is then a failure, not a skip.
const required = process.env.TORCHFOLD_TEST_RUN !== undefined;
// In the second run of npm test (the 1.13 addon under test) this file would only repeat the first run.
const secondRun = process.env.TORCHFOLD_TEST_RUN === 'debian';

/** Libraries that belong to a libtorch (its own, its OpenMP, and CUDA's from the nvidia wheels). */
const TORCHISH = /^lib(torch\w*|c10\w*|caffe2\w*|shm|gomp|cudart|cublas\w*|cudnn\w*|cufft\w*|cufile\w*|curand|cusolver\w*|cusparse\w*|nccl|nvrtc\w*|nvJitLink|nvshmem\w*|cupti|nvToolsExt)[.-]/;

/** ldd's answer: every library the addon loads, directly or not, and the file it resolves to. */
function resolved(addon: string): Map<string, string> {
  const out = execFileSync('ldd', [addon], { encoding: 'utf8' });
  const map = new Map<string, string>();
  for (const m of out.matchAll(/^\s*(\S+) => (\S+|not found)/gm)) map.set(m[1], m[2]);
  return map;
}

describe.skipIf(secondRun)('the addon built against each libtorch (scripts/setup.sh --all)', () => {
  for (const b of BUILDS) {
    const addon = path.join(ROOT, b.name, 'Release', 'torchfold.node');
    const present = fs.existsSync(`${addon}.json`);
    const skip = !present && !required;
    const why = skip ? ` (skipped: no ${b.name}/; bash scripts/setup.sh --all makes it)` : '';
    const record = (): Record => JSON.parse(fs.readFileSync(`${addon}.json`, 'utf8')) as Record;

    it.skipIf(skip)(`${b.name} (${b.what}): NEEDED and RUNPATH resolve into its libtorch and nowhere else${why}`, () => {
      expect(present, `${addon}.json`).toBe(true);
      const r = record();
      const libDir = fs.realpathSync(r.libtorch.libDir);
      const torchNeeded = r.needed.filter((n) => /^lib(torch|c10)/.test(n));
      expect(torchNeeded.length, r.needed.join(', ')).toBeGreaterThanOrEqual(2);
      if (r.libtorch.cuda) expect(r.needed).toEqual(expect.arrayContaining(['libtorch_cuda.so', 'libc10_cuda.so']));
      // RUNPATH: libtorch's folder alone for a libtorch of its own; none for the system's.
      expect(r.runpath).toEqual(r.libtorch.source === 'system' ? [] : [r.libtorch.libDir]);
      const libs = resolved(addon);
      for (const n of torchNeeded) {
        expect(libs.get(n), n).toBeDefined();
        expect(path.dirname(fs.realpathSync(libs.get(n)!)), n).toBe(libDir);
      }
      // Everything libtorch-like that loads comes from this libtorch's install: its lib/ and,
      // for a pip wheel, the nvidia-* wheels beside it. Never from another libtorch.
      const home = r.libtorch.source === 'system' ? '/usr/lib/' : fs.realpathSync(path.join(r.libtorch.root, '..')) + path.sep;
      for (const [name, file] of libs) {
        expect(file, name).not.toBe('not found');
        if (TORCHISH.test(name)) expect(fs.realpathSync(file), name).toMatch(new RegExp(`^${home.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`));
      }
    });

    it.skipIf(skip)(`${b.name} (${b.what}): loads in its own process, reports its libtorch, runs a PyTorch 2.x model${why}`, () => {
      const r = record();
      const f = pytorch2Fixtures().models.convbn_scripted;
      const input = (f.cases[0].inputs[0] as { __tensor__: { file: string; shape: number[] } }).__tensor__;
      const output = (f.cases[0].output as { __tensor__: { file: string } }).__tensor__;
      const script = `
        const tf = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
        const fs = require('fs');
        const read = (f) => new Float32Array(new Uint8Array(fs.readFileSync(f)).buffer);
        (async () => {
          const out = { versions: { ...tf.versions }, cudaAvailable: tf.cuda.isAvailable() };
          const m = await tf.load(${JSON.stringify(f.path)});
          const x = tf.Tensor.from(read(${JSON.stringify(path.join(ROOT, 'test/fixtures', input.file))}), ${JSON.stringify(input.shape)});
          const { module, report } = await m.fuse();
          const e = read(${JSON.stringify(path.join(ROOT, 'test/fixtures', output.file))});
          const a = (await module.forward(x)).toTypedArray();
          out.worst = 0; for (let i = 0; i < e.length; i++) out.worst = Math.max(out.worst, Math.abs(a[i] - e[i]));
          out.folded = report.folded;
          try { await x.to('cuda'); } catch (err) { out.cuda = { code: err.code, message: err.message }; }
          console.log(JSON.stringify(out));
        })().catch((e) => { console.error(e); process.exit(1); });`;
      const env = { ...process.env, TORCHFOLD_ADDON: addon };
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 120_000 });
      expect(child.status, child.stderr).toBe(0);
      const out = JSON.parse(child.stdout.trim().split('\n').pop()!);
      expect(out.versions.libtorch).toBe(r.libtorch.version);
      expect(r.libtorch.cuda).toBe(b.cuda);
      expect(out.versions.cudaBuild).toBe(b.cuda);
      expect(out.folded).toBe(f.batchNorms);
      expect(out.worst).toBeLessThanOrEqual(2e-5);
      // On a machine without a GPU (no /dev/nvidia0), even the CUDA build sees none, and says so.
      if (!fs.existsSync('/dev/nvidia0')) expect(out.cudaAvailable).toBe(false);
      if (!out.cudaAvailable) {
        expect(out.cuda.code).toBe('ERR_DEVICE_UNAVAILABLE');
        expect(out.cuda.message).toMatch(r.libtorch.cuda
          ? /^Device cuda:0 is not available: this build has CUDA \(libtorch 2\.[^)]*\), but no GPU is visible/
          : /^Device cuda:0 is not available: this build is CPU-only/);
      }
    });
  }

});
