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
  // A new folder each time: one test links a real library into its copy.
  const root = fs.mkdtempSync(path.join(dir, 'libtorch-'));
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

  it('LIBTORCH wins; libraries are linked by full path, a CUDA libtorch\'s torch_cuda with --no-as-needed', () => {
    const root = fakeCudaLibtorch();
    const found = JSON.parse(locator(['--json'], { LIBTORCH: root }).stdout);
    expect(found).toMatchObject({ source: 'LIBTORCH', cuda: true, cxx11Abi: 0, abiFrom: 'TorchConfig.cmake', version: '2.5.1+cu124', cxxStandard: 17 });
    const lib = (n: string) => path.join(root, 'lib', `lib${n}.so`);
    const libs = locator(['--gyp-libs'], { LIBTORCH: root }).stdout;
    expect(libs).toContain(`-Wl,--no-as-needed ${lib('torch_cuda')} ${lib('c10_cuda')} -Wl,--as-needed`);
    expect(libs).toContain(`-Wl,-rpath,${path.join(root, 'lib')}`);
    expect(libs).not.toMatch(/(^| )-l|(^| )-L/);  // never a search: another libtorch could answer it
    expect(locator(['--cmake-libs'], { LIBTORCH: root }).stdout.trim().split(';')).toContain(lib('torch_cpu'));
    expect(locator(['--gyp-defines'], { LIBTORCH: root }).stdout).toMatch(/_GLIBCXX_USE_CXX11_ABI=0 TORCHFOLD_WITH_CUDA=1/);
  });

  /** A copy of the fake libtorch whose libc10.so is a real one: the C++11-ABI library of the libtorch found here. */
  function withRealC10(config: string): string {
    const root = fakeCudaLibtorch();
    const real = JSON.parse(locator(['--json']).stdout) as { libraryFiles: string[] };
    fs.rmSync(path.join(root, 'lib', 'libc10.so'));
    fs.symlinkSync(real.libraryFiles.find((f) => /libc10\.so/.test(f))!, path.join(root, 'lib', 'libc10.so'));
    fs.writeFileSync(path.join(root, 'share/cmake/Torch/TorchConfig.cmake'), config);
    return root;
  }

  it('a TorchConfig without the ABI flag (pip\'s libtorch 2.x): the ABI is read from libc10\'s symbols', () => {
    const root = withRealC10('set(TORCH_CXX_FLAGS "")\n');
    const found = JSON.parse(locator(['--json'], { LIBTORCH: root }).stdout);
    expect(found).toMatchObject({ cxx11Abi: 1, abiFrom: 'libc10 symbols' });
    expect(locator(['--gyp-defines'], { LIBTORCH: root }).stdout).toContain('_GLIBCXX_USE_CXX11_ABI=1');
  });

  it('a real ABI mismatch fails the locator and CMake\'s configure, naming both sides', () => {
    const root = withRealC10('set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")\n');
    const r = locator(['--json'], { LIBTORCH: root });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`ABI mismatch in ${root}: ${path.join(root, 'share/cmake/Torch/TorchConfig.cmake')} ` +
      `says _GLIBCXX_USE_CXX11_ABI=0, but ${path.join(root, 'lib', 'libc10.so')} was compiled with _GLIBCXX_USE_CXX11_ABI=1`);
    const cmake = spawnSync('cmake', ['-S', ROOT, '-B', path.join(dir, 'cmake-abi')],
      { encoding: 'utf8', env: { ...process.env, LIBTORCH: root } });
    expect(cmake.status).not.toBe(0);
    expect(cmake.stderr.replace(/\s+/g, ' ')).toContain('says _GLIBCXX_USE_CXX11_ABI=0, but');
  });

  it('headers of another release than the libraries: refused, naming both versions', () => {
    const root = fakeCudaLibtorch();
    fs.mkdirSync(path.join(root, 'include/torch/headeronly'), { recursive: true });
    fs.writeFileSync(path.join(root, 'include/torch/headeronly/version.h'),
      '#define TORCH_VERSION_MAJOR 1\n#define TORCH_VERSION_MINOR 13\n#define TORCH_VERSION_PATCH 0\n');
    const r = locator(['--json'], { LIBTORCH: root });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`version mismatch in ${root}: its libraries are libtorch 2.5.1+cu124, but the headers under ` +
      `${path.join(root, 'include')} are libtorch 1.13.0`);
    fs.rmSync(path.join(root, 'include/torch/headeronly'), { recursive: true });
  });

  const systemLibtorch = locator(['--check'], { LIBTORCH: 'system' }).status === 0;
  it.skipIf(!systemLibtorch)(`LIBTORCH=system picks the system's libtorch even when another is the default${systemLibtorch ? '' :
    ' (skipped: no system libtorch; scripts/setup.sh --all installs libtorch-dev)'}`, () => {
    expect(JSON.parse(locator(['--json'], { LIBTORCH: 'system' }).stdout)).toMatchObject({ source: 'system', root: '/usr' });
  });

  it('LIBTORCH=system with no system libtorch says so, never falling back', () => {
    // A machine without one: the locator, in a process whose file checks see nothing under /usr.
    const r = spawnSync(process.execPath, ['-e', `
      const fs = require('fs');
      const access = fs.accessSync;
      fs.accessSync = (p, m) => { if (String(p).startsWith('/usr/')) throw new Error('hidden'); return access(p, m); };
      const { locate, failureMessage } = require(${JSON.stringify(path.join(ROOT, 'scripts', 'libtorch.js'))});
      const { found, attempts } = locate();
      console.log(JSON.stringify({ found, message: failureMessage(attempts) }));`],
    { encoding: 'utf8', env: { ...process.env, LIBTORCH: 'system' } });
    const out = JSON.parse(r.stdout) as { found: unknown; message: string };
    expect(out.found).toBeNull();
    expect(out.message).toMatch(/- LIBTORCH: LIBTORCH=system: no Torch\/TorchConfig\.cmake under \/usr\/lib\/.*\n/);
    expect(out.message).not.toContain('project:');  // an explicit choice never falls back
    expect(out.message).toContain('apt-get install -y libtorch-dev');
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
    const record = JSON.parse(fs.readFileSync(`${gypAddon}.json`, 'utf8')) as { libtorch: { version: string } };
    expect(r.libtorch).toBe(record.libtorch.version);
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
