// When the native part cannot load: each fault is arranged for real in a
// package folder laid out like an install from the tarball (dist/, the
// locator, one prebuild and its record, no local build), and the package is
// loaded in a child process. The faults: no libtorch on the machine (hidden in
// a private mount namespace), a prebuild for another libtorch version or ABI
// (never loaded: libtorch 2.x against 1.13 and the other way, with real builds
// of each), a CUDA build without the CUDA runtime, and broken candidates.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { versions } from '../lib';
import { ROOT, tmpDir } from './helpers/fixtures';

const dir = tmpDir('native-load');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const tuple = `${process.platform}-${process.arch}`;
const prebuildDir = path.join(ROOT, 'prebuilds', tuple);
const prebuildName = fs.readdirSync(prebuildDir).find((n) => n.endsWith('.node'));
if (!prebuildName) throw new Error(`no prebuild in ${prebuildDir}: npm test makes it (scripts/prebuild.js)`);
const prebuild = path.join(prebuildDir, prebuildName);
const found = JSON.parse(execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'libtorch.js'), '--json'],
  { encoding: 'utf8' })) as { version: string; cxx11Abi: number; libDir: string };

interface Record { libtorch: { version: string; cxx11Abi: number | null; cuda: boolean }; needed: string[] }

function patchelf(args: string[]): void {
  execFileSync('patchelf', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A package folder like `npm install torchfold-*.tgz` leaves, with its prebuild edited by `edit`. */
function fakeInstall(name: string, edit?: (addon: string, record: Record) => void, from = prebuild): { pkg: string; addon: string } {
  const pkg = path.join(dir, name);
  fs.mkdirSync(path.join(pkg, 'scripts'), { recursive: true });
  fs.cpSync(path.join(ROOT, 'dist'), path.join(pkg, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'));
  fs.copyFileSync(path.join(ROOT, 'scripts', 'libtorch.js'), path.join(pkg, 'scripts', 'libtorch.js'));
  fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
  // The same machine: the locator in the package finds the libtorch this checkout's does.
  if (fs.existsSync(path.join(ROOT, '.libtorch'))) fs.symlinkSync(path.join(ROOT, '.libtorch'), path.join(pkg, '.libtorch'));
  const addon = path.join(pkg, 'prebuilds', tuple, prebuildName!);
  fs.mkdirSync(path.dirname(addon), { recursive: true });
  fs.copyFileSync(from, addon);
  const record = JSON.parse(fs.readFileSync(`${from}.json`, 'utf8')) as Record;
  edit?.(addon, record);
  fs.writeFileSync(`${addon}.json`, JSON.stringify(record, null, 2));
  return { pkg, addon };
}

interface Outcome { loaded?: string; libtorch?: string; code?: string; message?: string; status: number | null; stderr: string }

/** Loads the package in a fresh process; `wrap` runs it under another command (e.g. unshare). */
function tryLoad(pkg: string, options: { env?: NodeJS.ProcessEnv; wrap?: string[] } = {}): Outcome {
  const script = `
    const b = require(${JSON.stringify(path.join(pkg, 'dist', 'binding.js'))});
    const tf = require(${JSON.stringify(path.join(pkg, 'dist', 'index.js'))});
    try { const libtorch = tf.versions.libtorch; console.log(JSON.stringify({ loaded: b.addonFile(), libtorch })); }
    catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })); }`;
  const env = { ...process.env, ...options.env };
  delete env.TORCHFOLD_ADDON;
  if (options.env?.TORCHFOLD_ADDON) env.TORCHFOLD_ADDON = options.env.TORCHFOLD_ADDON;
  const [cmd, ...args] = [...(options.wrap ?? []), process.execPath, '-e', script];
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 120_000 });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  let parsed: Partial<Outcome> = {};
  try { parsed = JSON.parse(line) as Partial<Outcome>; } catch { /* reported below through status/stderr */ }
  return { ...parsed, status: r.status, stderr: r.stderr };
}

/** A process that dies while loading would leave no JSON line: every fault must come back as an error. */
function expectLoadError(r: Outcome): string {
  expect(r.status, r.stderr).toBe(0);
  expect(r.code, JSON.stringify(r)).toBe('ERR_NATIVE_LOAD');
  expect(r.message).toMatch(/^torchfold: the native addon could not be loaded\.\nTried:\n/);
  expect(r.message).toMatch(/\nPossible solutions:\n {2}- /);
  return r.message!;
}

const torchSonames = (record: Record) => record.needed.filter((n) => /^lib(torch|torch_cpu|c10)\.so/.test(n));

/** Hiding libtorch from everything in this process tree needs a private mount namespace (root + unshare). */
function canHideLibtorch(): string | null {
  if (process.getuid?.() !== 0) return 'needs root for a private mount namespace';
  const r = spawnSync('unshare', ['-m', '--propagation', 'private', 'true']);
  if (r.status !== 0) return `unshare -m is not allowed here (${r.stderr?.toString().trim() || r.error?.message})`;
  if (!fs.existsSync(path.join(found.libDir, 'libtorch_cpu.so'))) return `libtorch is not in ${found.libDir}`;
  return null;
}
const hideSkip = canHideLibtorch();

describe('loading the native part, with each fault arranged', () => {
  it('the prebuild alone loads, from a package folder with no local build (the control)', () => {
    const { pkg, addon } = fakeInstall('control');
    const r = tryLoad(pkg);
    expect(r.loaded, JSON.stringify(r)).toBe(addon);
    expect(r.libtorch).toBe(versions.libtorch);
  });

  it('the prebuild records the libtorch it needs and does not carry it', () => {
    const record = JSON.parse(fs.readFileSync(`${prebuild}.json`, 'utf8')) as Record;
    expect(record.libtorch).toMatchObject({ version: found.version, cxx11Abi: found.cxx11Abi, cuda: versions.cudaBuild });
    expect(torchSonames(record).length).toBeGreaterThanOrEqual(2);
    expect(fs.readdirSync(prebuildDir).filter((n) => /libtorch|libc10/.test(n))).toEqual([]);
    expect(fs.statSync(prebuild).size).toBeLessThan(50 * 2 ** 20);
    // Stripped (prebuildify --strip): no symbol table, only the dynamic one.
    expect(execFileSync('readelf', ['-S', prebuild], { encoding: 'utf8' })).not.toMatch(/\.symtab/);
  });

  it.skipIf(hideSkip !== null)(`no libtorch on the machine: says none was found and how to install one${hideSkip ? ` (skipped: ${hideSkip})` : ''}`, () => {
    const { pkg, addon } = fakeInstall('no-libtorch');
    // In a private mount namespace, the library folder is replaced by links to
    // everything in it except libtorch's libraries: the loader, python3's torch
    // and the locator all see a machine without libtorch.
    // Every libtorch here is hidden: this checkout's and the system's (Debian's
    // libtorch-dev), or the loader would find the other one by its file name.
    const system = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'libtorch.js'), '--field', 'libDir'],
      { encoding: 'utf8', env: { ...process.env, LIBTORCH: 'system' } });
    const libDirs = [...new Set([found.libDir, ...(system.status === 0 ? [system.stdout.trim()] : [])])];
    const hide = ['set -e', ...libDirs.map((libDir, i) => {
      const ns = path.join(dir, `ns${i}`);
      fs.mkdirSync(path.join(ns, 'orig'), { recursive: true });
      fs.mkdirSync(path.join(ns, 'filtered'), { recursive: true });
      return `
      mount --bind '${libDir}' '${ns}/orig'
      for f in '${ns}'/orig/* '${ns}'/orig/.[!.]*; do
        [ -e "$f" ] || continue
        case "$(basename "$f")" in libtorch*|libc10*|libshm*|libcaffe2*) continue;; esac
        ln -s "$f" '${ns}/filtered/'"$(basename "$f")"
      done
      mount --bind '${ns}/filtered' '${libDir}'`;
    }), 'exec "$@"'].join('\n');
    const r = tryLoad(pkg, { wrap: ['unshare', '-m', '--propagation', 'private', 'bash', '-c', hide, 'hide'] });
    const message = expectLoadError(r);
    expect(message).toContain(`1. ${path.relative(pkg, addon)} (prebuild; needs libtorch ${found.version}`);
    expect(message).toMatch(/-> lib(torch|torch_cpu|c10)\.so[.\d]*: cannot open shared object file/);
    expect(message).toMatch(/libtorch on this machine: none found \(LIBTORCH: LIBTORCH is not set; (project: no lib|python3: .*; system: no lib)/);
    expect(message).toContain('apt-get install -y libtorch-dev');
    expect(message).toContain(`the prebuild needs ${found.version}`);
    expect(message).toContain('LIBTORCH=');
  });

  it('a prebuild for another libtorch version is never loaded: the error names both versions and says to rebuild', () => {
    const { pkg } = fakeInstall('wrong-version', (addon, record) => {
      for (const soname of torchSonames(record)) {
        patchelf(['--replace-needed', soname, soname.replace(/\.so.*$/, '.so.2.5'), addon]);
      }
      record.libtorch.version = '2.5.1';
    });
    const message = expectLoadError(tryLoad(pkg));
    expect(message).toContain(`-> not loaded: this prebuild is for libtorch 2.5.1 (`);
    expect(message).toContain(`but the libtorch found here is ${found.version}`);
    expect(message).toContain(`prebuilds/${tuple}/${prebuildName} is for libtorch 2.5.1, not the libtorch ${found.version} found here`);
    expect(message).toContain('npm rebuild torchfold --build-from-source');
  });

  it('a prebuild for the other C++ ABI is never loaded: the error names both ABIs', () => {
    const otherAbi = found.cxx11Abi === 1 ? 0 : 1;
    const abiName = (a: number) => (a === 1 ? 'C++11 ABI' : 'pre-C++11 ABI');
    const { pkg } = fakeInstall('abi', (_addon, record) => { record.libtorch.cxx11Abi = otherAbi; });
    const message = expectLoadError(tryLoad(pkg));
    expect(message).toContain(`-> not loaded: this prebuild is for libtorch ${found.version} (${abiName(otherAbi)}), ` +
      `but the libtorch found here is ${found.version}`);
    expect(message).toContain(abiName(found.cxx11Abi));
  });

  it('a local build that needs a symbol libtorch lacks (another ABI): the loader names it, the message says rebuild', () => {
    const { pkg } = fakeInstall('abi-local');
    // The addon asks libtorch for a symbol it does not export, as an addon built
    // with the other _GLIBCXX_USE_CXX11_ABI does (std::string's mangled name
    // differs): same length, so only the dynamic string changes.
    const local = path.join(pkg, 'build', 'Release', 'torchfold.node');
    fs.mkdirSync(path.dirname(local), { recursive: true });
    const bytes = fs.readFileSync(prebuild);
    const name = Buffer.from('_ZN5torch3jit4load');
    let at = bytes.indexOf(name);
    expect(at).toBeGreaterThan(0);
    for (; at >= 0; at = bytes.indexOf(name, at + 1)) bytes[at + name.length - 1] = 'D'.charCodeAt(0);
    fs.writeFileSync(local, bytes);
    fs.rmSync(path.join(pkg, 'prebuilds'), { recursive: true });
    const message = expectLoadError(tryLoad(pkg));
    expect(message).toMatch(/-> .*undefined symbol: _ZN5torch3jit4loaD/);
    expect(message).toContain('ABI mismatch: the addon was built against a different libtorch than the one the loader found');
  });

  // Real builds of both generations: scripts/setup.sh --all makes build-debian/ (1.13).
  const debianBuild = path.join(ROOT, 'build-debian', 'Release', 'torchfold.node');
  const debianSkip = fs.existsSync(`${debianBuild}.json`) ? null : 'no build-debian/ (bash scripts/setup.sh --all makes it)';
  const debianRecord = debianSkip ? undefined : JSON.parse(fs.readFileSync(`${debianBuild}.json`, 'utf8')) as Record;
  const prebuildRecord = JSON.parse(fs.readFileSync(`${prebuild}.json`, 'utf8')) as Record;

  it.skipIf(debianSkip !== null || !found.version.startsWith('2.'))(
    `the libtorch 2.x prebuild with Debian's 1.13 found (LIBTORCH=system): never loaded${debianSkip ? ` (skipped: ${debianSkip})` : ''}`, () => {
      const { pkg } = fakeInstall('2x-prebuild-113-found');
      const message = expectLoadError(tryLoad(pkg, { env: { LIBTORCH: 'system' } }));
      expect(message).toContain(`-> not loaded: this prebuild is for libtorch ${prebuildRecord.libtorch.version} (C++11 ABI), ` +
        `but the libtorch found here is ${debianRecord!.libtorch.version} (system, C++11 ABI)`);
      expect(message).toContain(`libtorch on this machine: libtorch ${debianRecord!.libtorch.version} (system)`);
    });

  it.skipIf(debianSkip !== null || !found.version.startsWith('2.'))(
    `a libtorch 1.13 prebuild with the default 2.x found: never loaded${debianSkip ? ` (skipped: ${debianSkip})` : ''}`, () => {
      const { pkg } = fakeInstall('113-prebuild-2x-found', undefined, debianBuild);
      const message = expectLoadError(tryLoad(pkg));
      expect(message).toContain(`-> not loaded: this prebuild is for libtorch ${debianRecord!.libtorch.version} (C++11 ABI), ` +
        `but the libtorch found here is ${found.version} (project, C++11 ABI)`);
      // The same package with Debian's libtorch chosen loads that prebuild.
      const ok = tryLoad(pkg, { env: { LIBTORCH: 'system' } });
      expect(ok.libtorch, JSON.stringify(ok)).toBe(debianRecord!.libtorch.version);
    });

  it('a CUDA build without the CUDA runtime: names the missing library and what to install', () => {
    const { pkg } = fakeInstall('cuda', (addon, record) => {
      patchelf(['--add-needed', 'libcudart.so.12', addon]);
      record.libtorch.cuda = true;
    });
    const message = expectLoadError(tryLoad(pkg));
    expect(message).toMatch(/needs libtorch .*, CUDA\)/);
    expect(message).toContain('-> libcudart.so.12: cannot open shared object file');
    expect(message).toContain('was built against a CUDA libtorch and libcudart.so.12 is missing');
    expect(message).toContain('LD_LIBRARY_PATH');
  });

  it('a broken local build falls back to the prebuild; when both fail, both are listed in order', () => {
    const { pkg, addon } = fakeInstall('fallback');
    const local = path.join(pkg, 'build', 'Release', 'torchfold.node');
    fs.mkdirSync(path.dirname(local), { recursive: true });
    fs.writeFileSync(local, 'not an ELF file\n');
    const ok = tryLoad(pkg);
    expect(ok.loaded, JSON.stringify(ok)).toBe(addon);

    patchelf(['--add-needed', 'libtorchfold-missing.so.1', addon]);
    const message = expectLoadError(tryLoad(pkg));
    expect(message).toContain('1. build/Release/torchfold.node (local build; no record of the libtorch it needs)');
    expect(message).toMatch(/-> .*(invalid ELF header|file too short)/);
    expect(message).toContain(`2. prebuilds/${tuple}/${prebuildName} (prebuild; needs libtorch ${found.version}`);
    expect(message).toContain('-> libtorchfold-missing.so.1: cannot open shared object file');
  });

  it('the install step with no loadable prebuild and no usable libtorch exits 1 before compiling, saying why', () => {
    const { pkg, addon } = fakeInstall('install-no-libtorch');
    fs.copyFileSync(path.join(ROOT, 'scripts', 'install.js'), path.join(pkg, 'scripts', 'install.js'));
    patchelf(['--add-needed', 'libtorchfold-missing.so.1', addon]);
    const missing = path.join(dir, 'no-such-libtorch');
    const install = (env: NodeJS.ProcessEnv) => spawnSync(process.execPath, [path.join(pkg, 'scripts', 'install.js')],
      { encoding: 'utf8', env: { ...process.env, TORCHFOLD_ADDON: '', ...env }, timeout: 120_000 });
    const r = install({ LIBTORCH: missing });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toContain('torchfold: no prebuilt addon loads on this machine, so it will be built from source');
    expect(r.stderr).toContain('-> libtorchfold-missing.so.1: cannot open shared object file');
    expect(r.stderr).toContain('torchfold: cannot build from source:');
    expect(r.stderr).toContain(`LIBTORCH=${missing} does not exist`);
    expect(r.stderr).toMatch(/Possible solutions:[\s\S]*apt-get install -y libtorch-dev/);
    expect(fs.existsSync(path.join(pkg, 'build'))).toBe(false);

    const skipped = install({ LIBTORCH: missing, TORCHFOLD_SKIP_INSTALL: '1' });
    expect(skipped.status).toBe(0);
    expect(skipped.stderr).toContain('TORCHFOLD_SKIP_INSTALL is set');
  });

  it('TORCHFOLD_ADDON is the only candidate when set', () => {
    const { pkg } = fakeInstall('override');
    const missing = path.join(os.tmpdir(), 'torchfold-no-such-addon.node');
    const message = expectLoadError(tryLoad(pkg, { env: { TORCHFOLD_ADDON: missing } }));
    expect(message).toContain(`1. ${missing} (TORCHFOLD_ADDON;`);
    expect(message).not.toContain('2. ');
    expect(message).toContain(`TORCHFOLD_ADDON=${missing} does not exist`);
  });
});
