/**
 * Opening a model file in a child process first (load(file, { isolate: true })).
 *
 * libtorch trusts the files it reads: some damaged or hostile archives crash it
 * (e.g. libtorch 1.13 dereferences null in its class-constant parser on a
 * misspelled class attribute). A crash in the child is reported as
 * ERR_FILE_CORRUPT and this process never opens the file with libtorch.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from './binding';
import { TorchfoldError } from './errors';

export interface IsolateOptions {
  /** Give up (ERR_TIMEOUT) when the child has not answered after this many ms. Default 120000. */
  timeoutMs?: number;
}

export const DEFAULT_ISOLATE_TIMEOUT_MS = 120_000;

interface ProbeReply { ok: boolean; code?: string; message?: string }

/** The compiled probe: beside this file in dist/, or in the package's dist/ when this file runs from source. */
function probeScript(): string {
  const here = path.join(__dirname, 'internal', 'probe.js');
  return fs.existsSync(here) ? here : path.join(packageRoot(), 'dist', 'internal', 'probe.js');
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

/**
 * Resolves when a child process opened `file` without trouble; rejects with
 * the child's own error when the load failed there, with ERR_FILE_CORRUPT when
 * the child crashed, and with ERR_TIMEOUT when it took too long.
 */
export function probeInChild(file: string, device: string, verify: boolean, timeoutMs: number): Promise<void> {
  const script = probeScript();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script, JSON.stringify({ path: file, device, verify })], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: process.env,
    });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr = (stderr + d).slice(-4000); });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new TorchfoldError(`Cannot start a process to open ${file}: ${e.message}`, 'ERR_IO'));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(new TorchfoldError(`Opening ${file} in a separate process took more than ${timeoutMs} ms; ` +
          'it was stopped, and the file was not loaded here.', 'ERR_TIMEOUT'));
        return;
      }
      const lines = stdout.trim().split('\n');
      let reply: ProbeReply | undefined;
      try {
        reply = JSON.parse(lines[lines.length - 1] ?? '') as ProbeReply;
      } catch {
        reply = undefined;
      }
      if (reply?.ok) { resolve(); return; }
      if (reply && reply.code) {
        reject(new TorchfoldError(reply.message ?? 'load failed', reply.code as TorchfoldError['code']));
        return;
      }
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const tail = lastLines(stderr, 5);
      if (!lines.includes('{"opening":true}')) {
        // It died before it reached the file: the isolation itself failed.
        reject(new TorchfoldError(`Cannot open ${file} in a separate process: the process ${how} before it ` +
          `opened the file.${tail ? `\nIts last words:\n${tail}` : ''}`, 'ERR_IO'));
        return;
      }
      reject(new TorchfoldError(`${file} is damaged or hostile: the process that opened it with libtorch ${how}, ` +
        `so it was not loaded into this process.${tail ? `\nIts last words:\n${tail}` : ''}`, 'ERR_FILE_CORRUPT'));
    });
  });
}
