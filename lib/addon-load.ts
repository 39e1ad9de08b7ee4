/**
 * Finding and loading the native addon, and explaining a load that failed.
 *
 * The order: `TORCHFOLD_ADDON` alone when it is set; otherwise node-gyp-build's
 * choice first (a local build in build/Release or build/Debug, else the
 * prebuild for this platform), then every other candidate. A prebuild whose
 * record names another libtorch release or ABI than the one
 * scripts/libtorch.js finds here is never loaded: it could bind to whatever
 * library of the same name the loader finds first. When none loads,
 * the error lists each file tried with what it needs (from the `ADDON.json`
 * record written beside it at build time) and why the loader refused it, the
 * libtorch this machine has, and the fixes that match.
 */
import * as fs from 'fs';
import * as path from 'path';

/** What a build recorded about the libtorch it needs (scripts/libtorch.js, `addonRecord`). */
export interface AddonRecord {
  torchfold?: string;
  libtorch?: { version?: string; source?: string; libDir?: string; cxx11Abi?: number | null; cuda?: boolean };
  needed?: string[] | null;
}

export interface LoadAttempt {
  file: string;
  origin: 'TORCHFOLD_ADDON' | 'local build' | 'prebuild';
  record?: AddonRecord;
  error?: string;
}

interface FoundLibtorch {
  version: string;
  source: string;
  root: string;
  libDir: string;
  cxx11Abi: number | null;
  cuda: boolean;
}

/** The addon files there are to try, in order, each once. */
export function addonCandidates(root: string, env: NodeJS.ProcessEnv = process.env): LoadAttempt[] {
  if (env.TORCHFOLD_ADDON) return [{ file: path.resolve(env.TORCHFOLD_ADDON), origin: 'TORCHFOLD_ADDON' }];
  const files: LoadAttempt[] = [];
  const add = (file: string, origin: LoadAttempt['origin']): void => {
    if (!files.some((f) => f.file === file)) files.push({ file, origin });
  };
  const originOf = (file: string): LoadAttempt['origin'] =>
    file.includes(`${path.sep}prebuilds${path.sep}`) ? 'prebuild' : 'local build';
  try {
    // node-gyp-build prefers build/Release, then build/Debug, then the best prebuild for this platform.
    const chosen = (require('node-gyp-build') as { resolve(dir: string): string }).resolve(root);
    add(chosen, originOf(chosen));
  } catch {
    /* nothing that node-gyp-build would load: the list below says what is there */
  }
  for (const sub of ['Release', 'Debug']) {
    const file = path.join(root, 'build', sub, 'torchfold.node');
    if (fs.existsSync(file)) add(file, 'local build');
  }
  const prebuilds = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  let names: string[] = [];
  try {
    names = fs.readdirSync(prebuilds).filter((n) => n.endsWith('.node')).sort();
  } catch {
    /* no prebuilds for this platform */
  }
  for (const n of names) add(path.join(prebuilds, n), 'prebuild');
  return files;
}

function readRecord(file: string): AddonRecord | undefined {
  try {
    return JSON.parse(fs.readFileSync(`${file}.json`, 'utf8')) as AddonRecord;
  } catch {
    return undefined;
  }
}

/**
 * Loads the first candidate that loads. Returns the module and the file, or
 * the attempts with their errors when none did.
 */
export function loadAddon<T>(root: string, env: NodeJS.ProcessEnv = process.env):
  { binding: T; file: string } | { attempts: LoadAttempt[] } {
  const attempts = addonCandidates(root, env);
  for (const a of attempts) {
    if (!fs.existsSync(a.file)) {
      a.error = 'no such file';
      continue;
    }
    if (a.origin === 'prebuild') {
      // Only a prebuild needs the check (a local build was made against this machine's
      // libtorch), and only then is the locator asked: it may start python3.
      a.record = readRecord(a.file);
      const refused = prebuildMismatch(a.record, locateLibtorch(root).found);
      if (refused) {
        a.error = refused;
        continue;
      }
    }
    try {
      return { binding: require(a.file) as T, file: a.file };
    } catch (e) {
      a.error = e instanceof Error ? e.message : String(e);
    }
  }
  // The records only explain a failure: they are not read when a load succeeds.
  for (const a of attempts) a.record ??= readRecord(a.file);
  return { attempts };
}

const PREBUILD_MISMATCH = 'not loaded: this prebuild is for';

/**
 * Why a prebuild must not be loaded with the libtorch found here, or undefined
 * when it may be: another release (major.minor) or another C++ ABI. With no
 * record, or no libtorch found, the loader's own error tells.
 */
export function prebuildMismatch(record: AddonRecord | undefined, found: FoundLibtorch | null): string | undefined {
  const t = record?.libtorch;
  if (!t?.version || !found) return undefined;
  const abiDiffers = t.cxx11Abi != null && found.cxx11Abi != null && t.cxx11Abi !== found.cxx11Abi;
  if (sameRelease(t.version, found.version) && !abiDiffers) return undefined;
  return `${PREBUILD_MISMATCH} libtorch ${t.version} (${abiName(t.cxx11Abi)}), but the libtorch found here is ` +
    `${found.version} (${found.source}, ${abiName(found.cxx11Abi)}) at ${found.root}`;
}

function abiName(abi: number | null | undefined): string {
  return abi === 0 ? 'pre-C++11 ABI' : abi === 1 ? 'C++11 ABI' : 'unknown ABI';
}

const located = new Map<string, { found: FoundLibtorch | null; attempts: string[] }>();

/**
 * The libtorch scripts/libtorch.js finds here, or why none was found: asked
 * before loading a prebuild and after a failed load, once per package root
 * (it may start python3).
 */
function locateLibtorch(root: string): { found: FoundLibtorch | null; attempts: string[] } {
  let r = located.get(root);
  if (!r) located.set(root, r = locateUncached(root));
  return r;
}

function locateUncached(root: string): { found: FoundLibtorch | null; attempts: string[] } {
  try {
    const locator = require(path.join(root, 'scripts', 'libtorch.js')) as
      { locate(): { found: FoundLibtorch | null; attempts: string[] } };
    return locator.locate();
  } catch (e) {
    return { found: null, attempts: [`scripts/libtorch.js could not run: ${e instanceof Error ? e.message : String(e)}`] };
  }
}

const CUDA_LIBRARY = /^lib(cudart|cublas|cublasLt|cudnn|cufft|curand|cusolver|cusparse|nccl|nvrtc|nvToolsExt|nvJitLink|cupti|cuda|torch_cuda|c10_cuda)\b/;
const TORCH_LIBRARY = /^lib(torch|torch_cpu|c10|torch_global_deps|shm|gomp|iomp5)\b/;

function needs(record: AddonRecord | undefined): string {
  const t = record?.libtorch;
  if (!t) return 'no record of the libtorch it needs';
  return `needs libtorch ${t.version ?? '?'} (${t.source ?? '?'}), ${abiName(t.cxx11Abi)}, ${t.cuda ? 'CUDA' : 'CPU'}`;
}

function describeFound(found: FoundLibtorch): string {
  return `libtorch ${found.version} (${found.source}) at ${found.root}, ${abiName(found.cxx11Abi)}, ${found.cuda ? 'CUDA' : 'CPU'}`;
}

function sameRelease(a: string | undefined, b: string | undefined): boolean {
  const mm = (v: string | undefined) => /^(\d+)\.(\d+)/.exec(v ?? '')?.slice(1, 3).join('.');
  return mm(a) !== undefined && mm(a) === mm(b);
}

/**
 * The message of ERR_NATIVE_LOAD: every file tried and why it failed, the
 * libtorch on this machine, and the fixes that match the failures.
 */
export function explainLoadFailure(root: string, attempts: LoadAttempt[], pkgName = 'torchfold'): string {
  const rel = (f: string) => (f.startsWith(root + path.sep) ? path.relative(root, f) : f);
  const lines = ['torchfold: the native addon could not be loaded.', 'Tried:'];
  if (!attempts.length) {
    lines.push(`  (nothing: no build/Release/torchfold.node and no prebuild for ${process.platform}-${process.arch} in ${root})`);
  }
  attempts.forEach((a, i) => {
    lines.push(`  ${i + 1}. ${rel(a.file)} (${a.origin}; ${needs(a.record)})`);
    lines.push(`     -> ${(a.error ?? 'not tried').split('\n')[0]}`);
  });

  const { found, attempts: searched } = locateLibtorch(root);
  lines.push(found ? `libtorch on this machine: ${describeFound(found)}`
    : `libtorch on this machine: none found (${searched.join('; ')})`);

  const fixes: string[] = [];
  const add = (s: string) => { if (!fixes.includes(s)) fixes.push(s); };
  const rebuild = `build the addon from source against the libtorch you have: \`npm rebuild ${pkgName} --build-from-source\` ` +
    '(set LIBTORCH=/path/to/libtorch first for an official zip or a pip PyTorch; in a clone of the repo: `npm run setup`)';
  const prebuilt = attempts.find((a) => a.origin === 'prebuild' && a.record?.libtorch?.version)?.record?.libtorch?.version;
  const installDebian = 'install libtorch' + (prebuilt ? ` (the prebuild needs ${prebuilt})` : '') + ': a pip PyTorch ' +
    '(`pip install torch`, then LIBTORCH="$(python3 -c \'import torch, os; print(os.path.dirname(torch.__file__))\')"), ' +
    'an official libtorch zip (LIBTORCH=/path/to/libtorch), or Debian/Ubuntu\'s `sudo apt-get install -y libtorch-dev` ' +
    '(1.13.1; LIBTORCH=system), then rebuild';

  for (const a of attempts) {
    const err = a.error ?? '';
    const t = a.record?.libtorch;
    const missing = /([^\s:]+\.so[.\d]*): cannot open shared object file/.exec(err)?.[1];
    if (err.startsWith(PREBUILD_MISMATCH)) {
      add(`${rel(a.file)} is for libtorch ${t?.version ?? '?'}, not the libtorch ${found?.version ?? '?'} found here: ` +
        `${rebuild}; or point LIBTORCH at a libtorch ${t?.version ?? '?'} (LIBTORCH=system for Debian's libtorch-dev)`);
      continue;
    }
    if (err === 'no such file') {
      if (a.origin === 'TORCHFOLD_ADDON') {
        add(`TORCHFOLD_ADDON=${a.file} does not exist: unset it to use the installed addon, or point it at a built torchfold.node`);
      }
      continue;
    }
    if (missing && CUDA_LIBRARY.test(missing)) {
      add(`${rel(a.file)} was built against a CUDA libtorch and ${missing} is missing: install the CUDA runtime that ` +
        'libtorch was built with (for a pip PyTorch, the nvidia-* wheels: add their lib folders to LD_LIBRARY_PATH), ' +
        'or use a CPU libtorch and rebuild');
      add(rebuild);
    } else if (missing && TORCH_LIBRARY.test(missing)) {
      if (!found) {
        add(installDebian);
      } else if (t?.version && !sameRelease(t.version, found.version)) {
        add(`wrong libtorch version: ${rel(a.file)} needs libtorch ${t.version}, this machine has ${found.version}: ` +
          `install libtorch ${t.version}, or ${rebuild}`);
      } else {
        add(`${missing} is not on the loader's path: add its folder to LD_LIBRARY_PATH ` +
          `(e.g. LD_LIBRARY_PATH=${found.libDir}), or rebuild, which records libtorch's folder in the addon`);
      }
    } else if (missing) {
      add(`a library the addon needs is missing (${missing}): install it, or rebuild from source on this machine`);
    } else if (/undefined symbol/.test(err)) {
      if (found && t && t.cxx11Abi != null && found.cxx11Abi != null && t.cxx11Abi !== found.cxx11Abi) {
        add(`ABI mismatch: ${rel(a.file)} was built with _GLIBCXX_USE_CXX11_ABI=${t.cxx11Abi}, the libtorch here uses ` +
          `${found.cxx11Abi}: use the libtorch build with the matching ABI (official zips come as "cxx11-abi" and ` +
          `"pre-cxx11" variants), or ${rebuild}`);
      } else if (found && t?.version && !sameRelease(t.version, found.version)) {
        add(`ABI mismatch: ${rel(a.file)} was built against libtorch ${t.version}, but libtorch ${found.version} was ` +
          `loaded: ${rebuild}`);
      } else {
        add(`ABI mismatch: the addon was built against a different libtorch than the one the loader found: ${rebuild}`);
      }
    } else if (/GLIBC(XX)?_[\d.]+' not found|CXXABI_[\d.]+' not found/.test(err)) {
      add(`${rel(a.file)} was built on a newer system than this one (C or C++ runtime too old): ${rebuild}`);
    } else if (/invalid ELF header|wrong ELF class|file too short|not a dynamic executable/.test(err)) {
      add(`${rel(a.file)} is not an addon for this platform (${process.platform}-${process.arch}), or is damaged: ${rebuild}`);
    } else if (/NODE_MODULE_VERSION|napi|N-API|Node-API/i.test(err)) {
      add(`${rel(a.file)} needs a newer Node.js (N-API 8: Node 20 or later)`);
    } else {
      add(rebuild);
    }
  }
  if (attempts.length === 0 || attempts.every((a) => a.error === 'no such file' && a.origin !== 'TORCHFOLD_ADDON')) {
    if (!found) add(installDebian);
    add(`the addon is not built: ${rebuild}`);
  }
  add(`see which libtorch a build would use: \`node ${path.join(root, 'scripts', 'libtorch.js')} --check\``);
  add('load a specific build: TORCHFOLD_ADDON=/path/to/torchfold.node');
  lines.push('Possible solutions:', ...fixes.map((f) => `  - ${f}`));
  return lines.join('\n');
}
