/** Process-wide facts and settings: CUDA, intra-op threads, versions. */
import * as fs from 'fs';
import * as path from 'path';
import { inspect } from 'util';
import { addonFile, native, packageRoot } from './binding';
import { neededLibraries } from './elf';
import { rangeError, TorchfoldError, withCallerStack } from './errors';
import { expectString } from './validate';

/** CUDA as libtorch sees it. Both calls load the addon on first use. */
export const cuda = {
  /** True when libtorch has CUDA and at least one GPU is visible. */
  isAvailable(): boolean { return native().cudaIsAvailable(); },
  /** The number of visible GPUs (0 without CUDA); `'cuda:N'` takes N from 0 to this minus 1. */
  deviceCount(): number { return native().cudaDeviceCount(); },
};

/**
 * Loads a shared library that registers TorchScript operators, like Python's
 * torch.ops.load_library (e.g. torchvision's ops for detection models). The
 * library stays loaded for the life of the process.
 *
 * @param file - Path to the shared library (`.so`).
 * @throws TypeError (`ERR_INVALID_ARG`) when `file` is not a non-empty string.
 * Rejects with `ERR_FILE_NOT_FOUND` / `ERR_NOT_A_FILE` for a bad path, with
 * `ERR_UNSUPPORTED` for a library linked against another libtorch than the one
 * this process runs (e.g. torchvision built for libtorch 1.13 in a 2.x process:
 * two libtorch versions in one process crash it), and with `ERR_TORCH` when the
 * library cannot be loaded (the loader's reason). Loading the same file twice is
 * a no-op.
 */
export function loadLibrary(file: string): Promise<void> {
  const target = path.resolve(expectString(file, 'path'));
  const binding = native();
  return withCallerStack(async () => {
    const refusal = await otherLibtorch(target);
    if (refusal) throw new TorchfoldError(refusal, 'ERR_UNSUPPORTED');
    return binding.loadLibrary(target);
  });
}

const LIBTORCH_SONAME = /^lib(torch|torch_cpu|torch_cuda|c10|c10_cuda)\.so(\.[\d.]+)?$/;
let ourSonames: Promise<string[] | null> | undefined;

/**
 * Why `file` must not be loaded here, or undefined. It must not when it names a
 * libtorch library of another release family than the addon's (Debian's carry
 * the version in the soname, libtorch_cpu.so.1.13; pip's and the official zips'
 * do not), or a CUDA library of libtorch's when this build has no CUDA: either
 * would bring a second libtorch into the process. Two unversioned 2.x builds
 * cannot be told apart this way. Files that cannot be read as ELF are left to
 * the loader.
 */
async function otherLibtorch(file: string): Promise<string | undefined> {
  let theirs: string[] | null;
  try {
    theirs = await neededLibraries(file);
  } catch {
    return undefined;  // missing, a folder, unreadable: the native call says which
  }
  const addon = addonFile();
  ourSonames ??= addon ? neededLibraries(addon).catch(() => null) : Promise.resolve(null);
  const ours = (await ourSonames)?.filter((n) => LIBTORCH_SONAME.test(n));
  if (!theirs || !ours?.length) return undefined;
  const suffix = (n: string) => n.replace(/^lib\w+\.so/, '');
  const v = native().versions();
  const foreign = theirs.filter((n) => LIBTORCH_SONAME.test(n) &&
    (!ours.some((o) => suffix(o) === suffix(n)) || (/_cuda\.so/.test(n) && !v.cudaBuild)));
  if (!foreign.length) return undefined;
  return `${file} was built against another libtorch: it needs ${foreign.join(', ')}, and this process runs libtorch ` +
    `${v.libtorch}${v.cudaBuild ? ' (CUDA)' : ' (CPU only)'}, whose libraries are ${ours.join(', ')}. ` +
    'Loading it would put two libtorch builds in one process. Use a build of the library made for this libtorch ' +
    '(for torchvision: the release paired with this PyTorch, CPU or CUDA alike), or run torchfold on the libtorch it was built for.';
}

/**
 * Sets libtorch's intra-op thread count for all later work in this process.
 *
 * Without it, torchfold takes `TORCHFOLD_NUM_THREADS` when that is a count from
 * 1 to 1024; otherwise libtorch's default (one per physical core, or what
 * `OMP_NUM_THREADS`/`MKL_NUM_THREADS` say), raised to 2 where at least two CPUs
 * are available and neither variable is set: at one thread libtorch 1.13 runs
 * 1×1 convolutions at small batch on a slow path.
 *
 * @param n - An integer from 1 to 1024.
 * @throws RangeError (`ERR_INVALID_ARG`) for anything else.
 */
export function setNumThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024) {
    throw rangeError('an integer from 1 to 1024', 'threads', n);
  }
  native().setNumThreads(n);
}

/** libtorch's intra-op thread count for the next call (see {@link setNumThreads} for the default). */
export function getNumThreads(): number {
  return native().getNumThreads();
}

/**
 * Sets how many compute threads run torchfold's work (load, forward, fuse,
 * save, benchmarks). Every such call runs on one of these threads, never on
 * libuv's pool or the JS thread; calls beyond the count wait in one queue, in
 * order. Each compute thread runs libtorch with {@link getNumThreads} intra-op
 * threads, so this count times that one is the number of cores torchfold
 * keeps busy: more than the machine has makes OpenMP teams fight over cores
 * and every call slower.
 *
 * Without it: `TORCHFOLD_COMPUTE_THREADS` when that is a count from 1 to 256,
 * else the usable CPUs divided by the intra-op thread count, at least 1 (one
 * on a 2-core machine). The pool is shared by every worker_thread of the
 * process. Lowering the count takes effect as running calls finish.
 *
 * @param n - An integer from 1 to 256.
 * @throws RangeError (`ERR_INVALID_ARG`) for anything else.
 */
export function setComputeThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 256) {
    throw rangeError('an integer from 1 to 256', 'compute threads', n);
  }
  native().setComputeThreads(n);
}

/** The number of compute threads (see {@link setComputeThreads} for the default). */
export function getComputeThreads(): number {
  return native().getComputeThreads();
}

/** The versions of the pieces torchfold is made of; see {@link versions}. */
export interface Versions {
  /** This package's version, from its package.json. */
  torchfold: string;
  /** The libtorch the addon was built against, e.g. '1.13.1'. */
  libtorch: string;
  /** The version in libtorch's headers (Debian's 1.13.1 says '1.13.0'). */
  libtorchHeaders: string;
  /** The N-API version the addon was built for. */
  napi: number;
  /** Whether the addon was linked with libtorch's CUDA libraries. */
  cudaBuild: boolean;
}

function readVersions(): Versions {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version: string };
  return { torchfold: pkg.version, ...native().versions() };
}

let cachedVersions: Versions | undefined;

/**
 * Versions of torchfold, libtorch and N-API. The addon is loaded on the first
 * read of a field (so a read can throw `ERR_NATIVE_LOAD`).
 */
export const versions: Versions = new Proxy({
  // console.log formats a proxy's target, not what its traps return: show the versions there.
  [inspect.custom]: (): Versions => ({ ...(cachedVersions ??= readVersions()) }),
} as unknown as Versions, {
  get(_t, key) {
    cachedVersions ??= readVersions();
    return cachedVersions[key as keyof Versions];
  },
  has(_t, key) {
    cachedVersions ??= readVersions();
    return key in cachedVersions;
  },
  ownKeys() {
    cachedVersions ??= readVersions();
    return Reflect.ownKeys(cachedVersions);
  },
  getOwnPropertyDescriptor(_t, key) {
    cachedVersions ??= readVersions();
    return { value: cachedVersions[key as keyof Versions], enumerable: true, configurable: true };
  },
});
