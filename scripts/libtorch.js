#!/usr/bin/env node
'use strict';
// The one place that decides which libtorch torchfold builds against.
// CMakeLists.txt, binding.gyp, scripts/setup.sh and the runtime loader all ask
// this script, so the two builds cannot drift apart.
//
// Search order (first hit wins):
//   1. $LIBTORCH: a libtorch folder (official zip, or the torch/ folder of a pip-installed
//      PyTorch), or the word `system` for the system's (Debian's libtorch-dev)
//   2. the project's own: .libtorch/cpu/torch, pip's CPU wheel, which scripts/setup.sh
//      installs in a clone (the default, libtorch 2.x)
//   3. a PyTorch importable by the `python3` first on PATH (torch.utils.cmake_prefix_path)
//   4. the system (Debian/Ubuntu `libtorch-dev`, or /usr/local)
// Never downloads anything. A libtorch whose parts disagree (TorchConfig's ABI flag against
// the ABI its libraries were compiled with, or its headers' version against its own) is
// refused here, so a build fails at configure and names both sides.
//
// Usage: node scripts/libtorch.js [--json | --field NAME | --gyp-includes | --gyp-libs | --cmake-libs |
//                                  --gyp-std | --gyp-defines | --check | --record ADDON]

const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const CONFIG_REL = path.join('Torch', 'TorchConfig.cmake');

function exists(p) {
  try { fs.accessSync(p); return true; } catch { return false; }
}

function libFile(libDir, name) {
  for (const ext of ['.so', '.dylib']) {
    const p = path.join(libDir, `lib${name}${ext}`);
    if (exists(p)) return p;
  }
  return null;
}

const PROJECT_LIBTORCH = path.join(__dirname, '..', '.libtorch', 'cpu', 'torch');

// TorchConfig.cmake records the ABI its libraries were built with; 2.x's leaves
// TORCH_CXX_FLAGS empty (its wheels are all C++11 ABI), so null says "not recorded".
function configAbi(cmakeDir) {
  const text = fs.readFileSync(path.join(cmakeDir, CONFIG_REL), 'utf8');
  const m = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(text);
  return m ? Number(m[1]) : null;
}

// The ABI c10 was compiled with, read from the library itself: a C++11-ABI build names
// std::__cxx11 types in its symbols, a pre-C++11 one never does. null when the file is
// not an ELF library.
function libraryAbi(file) {
  let bytes;
  try {
    bytes = fs.readFileSync(file);
  } catch {
    return null;
  }
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46) return null;
  return bytes.includes('St7__cxx11') ? 1 : 0;
}

// The version libtorch's headers declare (major.minor.patch), or null.
function headerVersion(includeRoot) {
  for (const rel of ['torch/headeronly/version.h', 'torch/csrc/api/include/torch/version.h']) {
    const p = path.join(includeRoot, rel);
    if (!exists(p)) continue;
    const text = fs.readFileSync(p, 'utf8');
    const v = {};
    for (const m of text.matchAll(/#define TORCH_VERSION_(MAJOR|MINOR|PATCH) (\d+)/g)) v[m[1]] = m[2];
    if (v.MAJOR && v.MINOR) return `${v.MAJOR}.${v.MINOR}.${v.PATCH ?? 0}`;
  }
  return null;
}

function majorMinor(v) {
  const m = /^(\d+)\.(\d+)/.exec(v ?? '');
  return m ? `${m[1]}.${m[2]}` : null;
}

// The folders a CUDA wheel's libtorch finds its CUDA libraries in (the nvidia-* wheels
// beside torch/), for the linker's -rpath-link; libtorch_cuda's own RPATH finds them at run time.
function cudaWheelDirs(root) {
  const nvidia = path.join(root, '..', 'nvidia');
  let names = [];
  try {
    names = fs.readdirSync(nvidia).sort();
  } catch {
    return [];
  }
  return names.map((n) => path.join(nvidia, n, 'lib')).filter(exists);
}

function readVersion(root, cmakeDir, source) {
  const buildVersion = path.join(root, 'build-version');
  if (exists(buildVersion)) return fs.readFileSync(buildVersion, 'utf8').trim();
  const pyVersion = path.join(root, 'version.py');
  if (exists(pyVersion)) {
    const m = /__version__\s*=\s*['"]([^'"]+)['"]/.exec(fs.readFileSync(pyVersion, 'utf8'));
    if (m) return m[1];
  }
  if (source === 'system') {
    try {
      const v = execFileSync('dpkg-query', ['-W', '-f=${Version}', 'libtorch-dev'],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
      if (v) return v.replace(/\+.*$/, '');
    } catch { /* not a Debian system, fall through */ }
  }
  const cv = path.join(cmakeDir, 'Torch', 'TorchConfigVersion.cmake');
  if (exists(cv)) {
    const m = /PACKAGE_VERSION\s+"([^"]+)"/.exec(fs.readFileSync(cv, 'utf8'));
    if (m) return m[1];
  }
  return 'unknown';
}

// The C++ standard libtorch's headers demand: their own guard says so (PyTorch
// 2.12+ requires C++20 of anything that includes ATen); older ones need C++17.
function cxxStandard(includeRoot, version) {
  for (const header of ['c10/util/C++17.h', 'ATen/ATen.h', 'torch/csrc/api/include/torch/all.h']) {
    const p = path.join(includeRoot, header);
    if (exists(p) && /C\+\+20 or (later|higher)/.test(fs.readFileSync(p, 'utf8'))) return 20;
  }
  const m = /^(\d+)\.(\d+)/.exec(version);
  if (m && (Number(m[1]) > 2 || (Number(m[1]) === 2 && Number(m[2]) >= 12))) return 20;
  return 17;
}

// Describe a libtorch given its root (holding include/ and lib/) and its cmake dir
// (the folder that holds Torch/TorchConfig.cmake).
function describe(source, root, cmakeDir, libDir, includeRoot) {
  const required = ['torch', 'torch_cpu', 'c10'];
  const missing = required.filter((n) => !libFile(libDir, n));
  if (missing.length) return { error: `no lib${missing.join('.so, lib')}.so in ${libDir}` };
  const header = path.join(includeRoot, 'torch', 'script.h');
  if (!exists(header)) return { error: `no torch/script.h under ${includeRoot}` };
  const cuda = Boolean(libFile(libDir, 'torch_cuda') && libFile(libDir, 'c10_cuda'));
  const libraries = cuda ? ['torch', 'torch_cpu', 'c10', 'torch_cuda', 'c10_cuda'] : required;
  const version = readVersion(root, cmakeDir, source);
  const fromConfig = configAbi(cmakeDir);
  const fromLibrary = libraryAbi(libFile(libDir, 'c10'));
  if (fromConfig !== null && fromLibrary !== null && fromConfig !== fromLibrary) {
    return { error: `ABI mismatch in ${root}: ${path.join(cmakeDir, CONFIG_REL)} says _GLIBCXX_USE_CXX11_ABI=${fromConfig}, ` +
      `but ${libFile(libDir, 'c10')} was compiled with _GLIBCXX_USE_CXX11_ABI=${fromLibrary}` };
  }
  const headers = headerVersion(includeRoot);
  if (headers && version !== 'unknown' && majorMinor(headers) !== majorMinor(version)) {
    return { error: `version mismatch in ${root}: its libraries are libtorch ${version}, ` +
      `but the headers under ${includeRoot} are libtorch ${headers}` };
  }
  return {
    source,
    root,
    cmakePrefixPath: cmakeDir,
    includeDirs: [includeRoot, path.join(includeRoot, 'torch', 'csrc', 'api', 'include')],
    libDir,
    libraries,
    libraryFiles: libraries.map((n) => libFile(libDir, n)),
    cuda,
    // Folders the linker may search for libtorch's own dependencies (never for libtorch itself).
    rpathLink: [libDir, ...(cuda ? cudaWheelDirs(root) : [])],
    cxx11Abi: fromConfig ?? fromLibrary,
    abiFrom: fromConfig !== null ? 'TorchConfig.cmake' : fromLibrary !== null ? 'libc10 symbols' : null,
    cxxStandard: cxxStandard(includeRoot, version),
    headerVersion: headers,
    version,
  };
}

function fromFolder(source, folder) {
  const root = path.resolve(folder);
  const cmakeDir = path.join(root, 'share', 'cmake');
  if (!exists(path.join(cmakeDir, CONFIG_REL))) {
    return { error: `no share/cmake/Torch/TorchConfig.cmake in ${root}` };
  }
  return describe(source, root, cmakeDir, path.join(root, 'lib'), path.join(root, 'include'));
}

function fromEnv() {
  const dir = process.env.LIBTORCH;
  if (!dir) return { skipped: 'LIBTORCH is not set' };
  if (dir === 'system' || path.resolve(dir) === '/usr') {
    const r = fromSystem();
    return r.source ? r : { error: `LIBTORCH=${dir}: ${r.error || r.skipped}` };
  }
  if (!exists(dir)) return { error: `LIBTORCH=${dir} does not exist` };
  return fromFolder('LIBTORCH', dir);
}

function fromProject() {
  if (!exists(PROJECT_LIBTORCH)) return { skipped: `no ${path.relative(path.join(__dirname, '..'), PROJECT_LIBTORCH)} (scripts/setup.sh installs it in a clone)` };
  return fromFolder('project', PROJECT_LIBTORCH);
}

function fromPython() {
  let out;
  try {
    out = execFileSync('python3', ['-c',
      'import torch.utils, sys; sys.stdout.write(torch.utils.cmake_prefix_path)'],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 60000 });
  } catch {
    return { skipped: 'the python3 on PATH cannot import torch' };
  }
  // cmake_prefix_path is <torch>/share/cmake
  const r = fromFolder('python', path.resolve(out.trim(), '..', '..'));
  if (r.error) r.error = `python3's torch (${out.trim()}): ${r.error}`;
  return r;
}

function multiarch() {
  try {
    return execFileSync('gcc', ['-dumpmachine'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return process.arch === 'arm64' ? 'aarch64-linux-gnu' : 'x86_64-linux-gnu';
  }
}

function fromSystem() {
  const triplet = multiarch();
  const candidates = [
    { cmake: `/usr/lib/${triplet}/cmake`, lib: `/usr/lib/${triplet}`, inc: '/usr/include', root: '/usr' },
    { cmake: '/usr/lib/cmake', lib: '/usr/lib', inc: '/usr/include', root: '/usr' },
    { cmake: '/usr/local/lib/cmake', lib: '/usr/local/lib', inc: '/usr/local/include', root: '/usr/local' },
    { cmake: '/usr/local/share/cmake', lib: '/usr/local/lib', inc: '/usr/local/include', root: '/usr/local' },
  ];
  const tried = [];
  for (const c of candidates) {
    if (!exists(path.join(c.cmake, CONFIG_REL))) { tried.push(c.cmake); continue; }
    return describe('system', c.root, c.cmake, c.lib, c.inc);
  }
  return { skipped: `no Torch/TorchConfig.cmake under ${tried.join(', ')}` };
}

function locate() {
  const attempts = [];
  for (const [name, fn] of [['LIBTORCH', fromEnv], ['project', fromProject], ['python3', fromPython], ['system', fromSystem]]) {
    const r = fn();
    if (r.source) return { found: r, attempts };
    attempts.push(`${name}: ${r.error || r.skipped}`);
    // An explicit LIBTORCH, or the project's own libtorch, that is wrong must not
    // silently fall back to another libtorch.
    if ((name === 'LIBTORCH' || name === 'project') && r.error) break;
  }
  return { found: null, attempts };
}

function failureMessage(attempts) {
  return [
    'torchfold: no usable libtorch was found.',
    'Tried, in order:',
    ...attempts.map((a) => `  - ${a}`),
    'Possible solutions:',
    '  - Debian/Ubuntu: sudo apt-get install -y libtorch-dev   (or run: bash scripts/setup.sh as root)',
    '  - An official libtorch zip: unzip it and set LIBTORCH=/path/to/libtorch',
    '  - A pip-installed PyTorch: LIBTORCH="$(python3 -c \'import torch, os; print(os.path.dirname(torch.__file__))\')"',
  ].join('\n');
}

function main(argv) {
  const { found, attempts } = locate();
  if (!found) {
    process.stderr.write(failureMessage(attempts) + '\n');
    process.exit(1);
  }
  const arg = argv[0] || '--json';
  const q = (s) => (/[\s"']/.test(s) ? JSON.stringify(s) : s);
  switch (arg) {
    case '--json': process.stdout.write(JSON.stringify(found, null, 2) + '\n'); break;
    case '--check': process.stdout.write(`libtorch ${found.version} (${found.source}) at ${found.root}\n`); break;
    case '--record': {
      if (!argv[1]) { process.stderr.write('libtorch.js: --record needs the addon\'s path\n'); process.exit(2); }
      process.stdout.write(`${writeRecord(path.resolve(argv[1]), found)}\n`);
      break;
    }
    case '--field': {
      const v = found[argv[1]];
      process.stdout.write((Array.isArray(v) ? v.join(';') : String(v)) + '\n');
      break;
    }
    case '--gyp-includes': process.stdout.write(found.includeDirs.map(q).join(' ') + '\n'); break;
    case '--gyp-defines': process.stdout.write(defines(found).join(' ') + '\n'); break;
    case '--gyp-std': process.stdout.write(`-std=c++${found.cxxStandard}\n`); break;
    case '--gyp-libs': process.stdout.write(linkFlags(found).map(q).join(' ') + '\n'); break;
    case '--cmake-libs': process.stdout.write(linkFlags(found).join(';') + '\n'); break;
    default:
      process.stderr.write(`libtorch.js: unknown option ${arg}\n`);
      process.exit(2);
  }
}

/**
 * The linker's arguments for this libtorch. Its libraries are named by their full
 * paths, never with -L/-l, so no other libtorch on the machine (Debian's in
 * /usr/lib, say) can stand in for them at link time; -rpath records the folder
 * for run time. A CUDA libtorch's torch_cuda and c10_cuda are linked with
 * --no-as-needed: nothing calls them directly, and without them CUDA kernels
 * never register.
 */
function linkFlags(found) {
  const flags = found.rpathLink.map((d) => `-Wl,-rpath-link,${d}`);
  if (found.source !== 'system') flags.push(`-Wl,-rpath,${found.libDir}`);
  const files = found.libraries.map((n, i) => ({ name: n, file: found.libraryFiles[i] }));
  const cuda = files.filter((f) => f.name.endsWith('_cuda')).map((f) => f.file);
  if (cuda.length) flags.push('-Wl,--no-as-needed', ...cuda, '-Wl,--as-needed');
  flags.push(...files.filter((f) => !f.name.endsWith('_cuda')).map((f) => f.file));
  return flags;
}

function defines(found) {
  // A bare token (the C++ side stringifies it): quotes do not survive gyp's shell escaping.
  const d = [`TORCHFOLD_LIBTORCH_VERSION=${found.version.replace(/[^0-9A-Za-z.+_-]/g, '_')}`];
  if (found.cxx11Abi !== null) d.push(`_GLIBCXX_USE_CXX11_ABI=${found.cxx11Abi}`);
  if (found.cuda) d.push('TORCHFOLD_WITH_CUDA=1');
  return d;
}

/**
 * The dynamic section of an ELF file as readelf (binutils) prints it: the
 * libraries it names as NEEDED and its RUNPATH (or RPATH) folders, or nulls
 * when it cannot be read.
 */
function dynamicSection(file) {
  let out;
  try {
    out = execFileSync('readelf', ['-d', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return { needed: null, runpath: null };
  }
  const rp = /\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[([^\]]*)\]/.exec(out);
  return {
    needed: [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]),
    runpath: rp ? rp[1].split(':').filter(Boolean) : [],
  };
}

/**
 * The record of what an addon needs at run time, written beside it as ADDON.json.
 * lib/binding.ts reads it to explain a load that failed (which libtorch, which
 * ABI, CUDA or not). It names libtorch; it never carries it.
 */
function addonRecord(addon, found) {
  const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8'));
  return {
    torchfold: pkg.version,
    napi: 8,
    platform: process.platform,
    arch: process.arch,
    libtorch: {
      version: found.version,
      source: found.source,
      root: found.root,
      libDir: found.libDir,
      cxx11Abi: found.cxx11Abi,
      cuda: found.cuda,
    },
    ...dynamicSection(addon),
    builtWith: { node: process.versions.node },
  };
}

function writeRecord(addon, found) {
  const file = `${addon}.json`;
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, JSON.stringify(addonRecord(addon, found), null, 2) + '\n');
  fs.renameSync(tmp, file);
  return file;
}

module.exports = { locate, failureMessage, defines, linkFlags, addonRecord, writeRecord, dynamicSection };
if (require.main === module) main(process.argv.slice(2));
