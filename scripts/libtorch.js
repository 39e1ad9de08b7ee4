#!/usr/bin/env node
'use strict';
// The one place that decides which libtorch torchfold builds against.
// CMakeLists.txt, binding.gyp, scripts/setup.sh and the runtime loader all ask
// this script, so the two builds cannot drift apart.
//
// Search order (first hit wins):
//   1. $LIBTORCH: a libtorch folder (official zip, or the torch/ folder of a pip-installed PyTorch)
//   2. a PyTorch importable by the `python3` first on PATH (torch.utils.cmake_prefix_path)
//   3. the system (Debian/Ubuntu `libtorch-dev`, or /usr/local)
// Never downloads anything.
//
// Usage: node scripts/libtorch.js [--json | --field NAME | --gyp-includes | --gyp-libs |
//                                  --gyp-ldflags | --gyp-defines | --check | --record ADDON]

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

function readAbi(cmakeDir) {
  // TorchConfig.cmake records the ABI its libraries were built with.
  const text = fs.readFileSync(path.join(cmakeDir, CONFIG_REL), 'utf8');
  const m = /_GLIBCXX_USE_CXX11_ABI=([01])/.exec(text);
  return m ? Number(m[1]) : null;
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
  return {
    source,
    root,
    cmakePrefixPath: cmakeDir,
    includeDirs: [includeRoot, path.join(includeRoot, 'torch', 'csrc', 'api', 'include')],
    libDir,
    libraries,
    libraryFiles: libraries.map((n) => libFile(libDir, n)),
    cuda,
    cxx11Abi: readAbi(cmakeDir),
    cxxStandard: cxxStandard(includeRoot, version),
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
  if (!exists(dir)) return { error: `LIBTORCH=${dir} does not exist` };
  return fromFolder('LIBTORCH', dir);
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
  for (const [name, fn] of [['LIBTORCH', fromEnv], ['python3', fromPython], ['system', fromSystem]]) {
    const r = fn();
    if (r.source) return { found: r, attempts };
    attempts.push(`${name}: ${r.error || r.skipped}`);
    // An explicit LIBTORCH that is wrong must not silently fall back to another libtorch.
    if (name === 'LIBTORCH' && r.error) break;
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
  const rpath = found.source === 'system' ? [] : [`-Wl,-rpath,${found.libDir}`];
  const cudaLibs = found.cuda ? ['-Wl,--no-as-needed', '-ltorch_cuda', '-lc10_cuda', '-Wl,--as-needed'] : [];
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
    case '--gyp-libs':
      process.stdout.write([`-L${q(found.libDir)}`, ...rpath, ...cudaLibs,
        ...found.libraries.filter((l) => !l.endsWith('_cuda')).map((l) => `-l${l}`)].join(' ') + '\n');
      break;
    default:
      process.stderr.write(`libtorch.js: unknown option ${arg}\n`);
      process.exit(2);
  }
}

function defines(found) {
  // A bare token (the C++ side stringifies it): quotes do not survive gyp's shell escaping.
  const d = [`TORCHFOLD_LIBTORCH_VERSION=${found.version.replace(/[^0-9A-Za-z.+_-]/g, '_')}`];
  if (found.cxx11Abi !== null) d.push(`_GLIBCXX_USE_CXX11_ABI=${found.cxx11Abi}`);
  if (found.cuda) d.push('TORCHFOLD_WITH_CUDA=1');
  return d;
}

/** The shared libraries an ELF file names as NEEDED (readelf from binutils), or null when they cannot be read. */
function neededLibraries(file) {
  try {
    const out = execFileSync('readelf', ['-d', file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return [...out.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
  } catch {
    return null;
  }
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
      libDir: found.libDir,
      cxx11Abi: found.cxx11Abi,
      cuda: found.cuda,
    },
    needed: neededLibraries(addon),
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

module.exports = { locate, failureMessage, defines, addonRecord, writeRecord, neededLibraries };
if (require.main === module) main(process.argv.slice(2));
