/** Process-wide facts and settings: CUDA, intra-op threads, versions. */
import * as fs from 'fs';
import * as path from 'path';
import { native, packageRoot } from './binding';
import { rangeError, withCallerStack } from './errors';
import { expectString } from './validate';

export const cuda = {
  /** True when libtorch has CUDA and at least one GPU is visible. */
  isAvailable(): boolean { return native().cudaIsAvailable(); },
  deviceCount(): number { return native().cudaDeviceCount(); },
};

/**
 * Loads a shared library that registers TorchScript operators, like Python's
 * torch.ops.load_library (e.g. torchvision's ops for detection models). The
 * library stays loaded for the life of the process.
 */
export function loadLibrary(file: string): Promise<void> {
  const target = path.resolve(expectString(file, 'path'));
  const binding = native();
  return withCallerStack(() => binding.loadLibrary(target));
}

/** Sets libtorch's intra-op thread count for all later work (libtorch's default here is 1). */
export function setNumThreads(n: number): void {
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > 1024) {
    throw rangeError('an integer from 1 to 1024', 'threads', n);
  }
  native().setNumThreads(n);
}

export function getNumThreads(): number {
  return native().getNumThreads();
}

export interface Versions {
  torchfold: string;
  /** The libtorch the addon was built against, e.g. '1.13.1'. */
  libtorch: string;
  /** The version in libtorch's headers (Debian's 1.13.1 says '1.13.0'). */
  libtorchHeaders: string;
  napi: number;
  /** Whether the addon was linked with libtorch's CUDA libraries. */
  cudaBuild: boolean;
}

function readVersions(): Versions {
  const pkg = JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8'));
  return { torchfold: pkg.version, ...native().versions() };
}

let cachedVersions: Versions | undefined;

/** Versions of torchfold, libtorch and N-API (the addon is loaded on first read). */
export const versions: Versions = new Proxy({} as Versions, {
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
