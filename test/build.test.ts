// The build: the libtorch locator, the node-gyp build, and the loader's error.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { versions } from '../lib';
import { model, ROOT, tmpDir } from './helpers/fixtures';

const dir = tmpDir('build');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function locator(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'libtorch.js'), ...args], {
    encoding: 'utf8', env: { ...process.env, ...env },
  });
}

/** A folder laid out like an official libtorch zip with CUDA (empty files stand in for libraries). */
function fakeCudaLibtorch(): string {
  const root = path.join(dir, 'libtorch');
  for (const d of ['lib', 'include/torch', 'share/cmake/Torch']) fs.mkdirSync(path.join(root, d), { recursive: true });
  for (const l of ['torch', 'torch_cpu', 'c10', 'torch_cuda', 'c10_cuda']) fs.writeFileSync(path.join(root, 'lib', `lib${l}.so`), '');
  fs.writeFileSync(path.join(root, 'include/torch/script.h'), '');
  fs.writeFileSync(path.join(root, 'share/cmake/Torch/TorchConfig.cmake'), 'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")\n');
  fs.writeFileSync(path.join(root, 'build-version'), '2.5.1+cu124\n');
  return root;
}

describe('libtorch locator (scripts/libtorch.js)', () => {
  it('finds the libtorch the addon was built against', () => {
    const r = locator(['--json']);
    expect(r.status).toBe(0);
    const found = JSON.parse(r.stdout);
    expect(found.version).toBe(versions.libtorch);
    expect(found.libraries).toEqual(expect.arrayContaining(['torch', 'torch_cpu', 'c10']));
    expect([0, 1]).toContain(found.cxx11Abi);
  });

  it('LIBTORCH wins, and a CUDA libtorch links torch_cuda with --no-as-needed', () => {
    const root = fakeCudaLibtorch();
    const found = JSON.parse(locator(['--json'], { LIBTORCH: root }).stdout);
    expect(found).toMatchObject({ source: 'LIBTORCH', cuda: true, cxx11Abi: 0, version: '2.5.1+cu124', cxxStandard: 17 });
    const libs = locator(['--gyp-libs'], { LIBTORCH: root }).stdout;
    expect(libs).toMatch(/-Wl,--no-as-needed -ltorch_cuda -lc10_cuda -Wl,--as-needed/);
    expect(libs).toContain(`-Wl,-rpath,${path.join(root, 'lib')}`);
    expect(locator(['--gyp-defines'], { LIBTORCH: root }).stdout).toMatch(/_GLIBCXX_USE_CXX11_ABI=0 TORCHFOLD_WITH_CUDA=1/);
  });

  it('headers that demand C++20 get -std=c++20 in both builds', () => {
    const root = fakeCudaLibtorch();
    fs.mkdirSync(path.join(root, 'include/c10/util'), { recursive: true });
    fs.writeFileSync(path.join(root, 'include/c10/util/C++17.h'),
      '#error C++20 or later compatible compiler is required to use PyTorch.\n');
    expect(JSON.parse(locator(['--json'], { LIBTORCH: root }).stdout).cxxStandard).toBe(20);
    expect(locator(['--gyp-std'], { LIBTORCH: root }).stdout.trim()).toBe('-std=c++20');
    fs.rmSync(path.join(root, 'include/c10'), { recursive: true });
  });

  it('a wrong LIBTORCH fails with what was tried and how to fix it, never falling back', () => {
    const r = locator(['--json'], { LIBTORCH: path.join(dir, 'missing') });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('no usable libtorch was found');
    expect(r.stderr).toContain(`LIBTORCH=${path.join(dir, 'missing')} does not exist`);
    expect(r.stderr).toMatch(/Possible solutions:[\s\S]*apt-get install -y libtorch-dev[\s\S]*LIBTORCH=/);
  });
});

describe('the prebuild (prebuildify over binding.gyp)', () => {
  const prebuilds = path.join(ROOT, 'prebuilds', `${process.platform}-${process.arch}`);
  const gypAddon = path.join(prebuilds, fs.readdirSync(prebuilds).find((n) => n.endsWith('.node')) ?? 'missing.node');

  it('prebuilds/<platform>-<arch>/ holds one N-API addon and its libtorch record (npm test makes them)', () => {
    expect(fs.existsSync(gypAddon)).toBe(true);
    expect(fs.existsSync(`${gypAddon}.json`)).toBe(true);
  });

  it('loads and runs a model with PyTorch\'s result', () => {
    const f = model('convbn_scripted');
    const input = (f.cases[0].inputs[0] as { __tensor__: { file: string; shape: number[] } }).__tensor__;
    const output = (f.cases[0].output as { __tensor__: { file: string } }).__tensor__;
    const script = `
      const tf = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
      const fs = require('fs');
      const read = (f) => new Float32Array(new Uint8Array(fs.readFileSync(f)).buffer);
      (async () => {
        const m = await tf.load(${JSON.stringify(f.path)});
        const y = await m.forward(tf.Tensor.from(read(${JSON.stringify(path.join(ROOT, 'test/fixtures', input.file))}), ${JSON.stringify(input.shape)}));
        const e = read(${JSON.stringify(path.join(ROOT, 'test/fixtures', output.file))});
        const a = y.toTypedArray();
        let worst = 0; for (let i = 0; i < e.length; i++) worst = Math.max(worst, Math.abs(a[i] - e[i]));
        console.log(JSON.stringify({ worst, n: a.length, libtorch: tf.versions.libtorch }));
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const out = execFileSync(process.execPath, ['-e', script], {
      encoding: 'utf8', env: { ...process.env, TORCHFOLD_ADDON: gypAddon },
    });
    const r = JSON.parse(out);
    expect(r.n).toBe(10);
    expect(r.worst).toBeLessThanOrEqual(1e-5);
    expect(r.libtorch).toBe(versions.libtorch);
  });
});

describe('loading the addon', () => {
  it('a missing addon gives ERR_NATIVE_LOAD with possible solutions', () => {
    const script = `
      const tf = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
      try { tf.getNumThreads(); } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
    const out = execFileSync(process.execPath, ['-e', script], {
      encoding: 'utf8', env: { ...process.env, TORCHFOLD_ADDON: path.join(dir, 'nope.node') },
    });
    const r = JSON.parse(out);
    expect(r.code).toBe('ERR_NATIVE_LOAD');
    expect(r.message).toMatch(/could not be loaded[\s\S]*Possible solutions:/);
  });

  it('versions names torchfold, libtorch and N-API', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
    expect(versions.torchfold).toBe(pkg.version);
    expect(versions.libtorch).toMatch(/^\d+\.\d+/);
    expect(versions.napi).toBe(8);
    expect({ ...versions }).toHaveProperty('libtorchHeaders');
  });
});
