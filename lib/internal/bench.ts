/**
 * Entry points for bench/ only (not exported from the package): libtorch's own
 * conv-BN transforms as peers, a forward loop timed inside C++ with no JS
 * between calls, a float64 copy for reference outputs, and peak-RSS probes.
 */
import * as fs from 'fs';
import { withCallerStack } from '../errors';
import { nativeHandle, ScriptModule } from '../module';
import { toNative } from '../values';

export type PeerKind = 'fold_conv_bn' | 'freeze' | 'freeze_optimize';

/** libtorch's FoldConvBatchNorm, freeze, or freeze + optimize_for_inference on a copy of `m`. */
export async function peer(m: ScriptModule, kind: PeerKind): Promise<{ module: ScriptModule; buildMs: number }> {
  const r = await withCallerStack(() => nativeHandle(m).benchPeer(kind));
  return { module: new ScriptModule(r.module), buildMs: r.buildMs };
}

/**
 * forward timed in C++ on a compute thread (no JS between calls): `iterations`
 * calls after `warmup`, milliseconds each.
 */
export function timeForwardNative(m: ScriptModule, inputs: unknown[], iterations: number, warmup: number): Promise<number[]> {
  const args = inputs.map((v, i) => toNative(v, `inputs[${i}]`));
  return withCallerStack(() => nativeHandle(m).benchTimeForward(args, iterations, warmup));
}

/** A copy with floating-point parameters and buffers cast to `dtype`. */
export async function toDtype(m: ScriptModule, dtype: 'float64' | 'float32'): Promise<ScriptModule> {
  return new ScriptModule(await withCallerStack(() => nativeHandle(m).benchToDtype(dtype)));
}

/** Linux: resets the process's peak RSS (VmHWM) to the current RSS; false where that is not possible. */
export function resetPeakRss(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** Current and peak resident set size in bytes, from /proc/self/status (null off Linux). */
export function rss(): { current: number; peak: number } | null {
  try {
    const status = fs.readFileSync('/proc/self/status', 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    return { current: kb('VmRSS'), peak: kb('VmHWM') };
  } catch {
    return null;
  }
}
