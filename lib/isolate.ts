/**
 * Opening a model file in a child process first (load(file, { isolate: true })).
 *
 * libtorch trusts the files it reads: some damaged or hostile archives crash it
 * (e.g. libtorch 1.13 dereferences null in its class-constant parser on a
 * misspelled class attribute). A crash in the child is reported as
 * ERR_FILE_CORRUPT and this process never opens the file with libtorch.
 *
 * The child stays warm between files (it pays Node's and libtorch's start once)
 * and opens one file at a time, so a crash always names the file that caused
 * it. It is replaced after a crash or a timeout, ends after a few idle seconds,
 * and never keeps this process alive.
 */
import { ChildProcessWithoutNullStreams, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from './binding';
import { ErrorCode, TorchfoldError } from './errors';

/** `load(path, { isolate: { ... } })`: opening the file in a child process first. See {@link LoadOptions.isolate}. */
export interface IsolateOptions {
  /**
   * Give up when the child has not answered after this many milliseconds: the
   * child is killed and the load rejects with `ERR_TIMEOUT`. A number > 0.
   *
   * @defaultValue `120000` (2 minutes)
   */
  timeoutMs?: number;
}

export const DEFAULT_ISOLATE_TIMEOUT_MS = 120_000;
/** How long an idle child is kept for the next file. */
const IDLE_MS = 5_000;

interface ProbeReply { id: number; opening?: boolean; ok?: boolean; code?: string; message?: string }

interface Job {
  id: number;
  file: string;
  device: string;
  verify: boolean;
  timeoutMs: number;
  resolve: () => void;
  reject: (e: Error) => void;
  /** Already retried in a fresh child after a warm one died on it. */
  retried?: boolean;
}

/** The compiled probe: beside this file in dist/, or in the package's dist/ when this file runs from source. */
function probeScript(): string {
  const here = path.join(__dirname, 'internal', 'probe.js');
  return fs.existsSync(here) ? here : path.join(packageRoot(), 'dist', 'internal', 'probe.js');
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

type Stream = { ref?: () => void; unref?: () => void };

class Prober {
  #child: ChildProcessWithoutNullStreams | undefined;
  #queue: Job[] = [];
  #current: { job: Job; opened: boolean; timer: NodeJS.Timeout } | undefined;
  /** Files the current child has opened before the one in progress. */
  #served = 0;
  #buffer = '';
  #stderr = '';
  #idle: NodeJS.Timeout | undefined;
  #nextId = 1;

  probe(file: string, device: string, verify: boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ id: this.#nextId++, file, device, verify, timeoutMs, resolve, reject });
      this.#pump();
    });
  }

  #spawn(): ChildProcessWithoutNullStreams {
    const child = spawn(process.execPath, [probeScript(), '--serve'], { stdio: ['pipe', 'pipe', 'pipe'], env: process.env });
    this.#buffer = '';
    this.#stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => this.#onData(child, d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => { this.#stderr = (this.#stderr + d).slice(-4000); });
    child.stdin.on('error', () => { /* the child died: 'close' reports it */ });
    child.on('error', (e) => this.#onExit(child, null, null, e));
    child.on('close', (code, signal) => this.#onExit(child, code, signal));
    return child;
  }

  /** Whether the child (process and pipes) may keep this process alive. */
  #hold(child: ChildProcessWithoutNullStreams, on: boolean): void {
    for (const h of [child, child.stdin, child.stdout, child.stderr] as Stream[]) {
      if (on) h.ref?.(); else h.unref?.();
    }
  }

  #pump(): void {
    if (this.#current || this.#queue.length === 0) return;
    if (this.#idle) { clearTimeout(this.#idle); this.#idle = undefined; }
    const job = this.#queue.shift()!;
    if (!this.#child) { this.#child = this.#spawn(); this.#served = 0; }
    const child = this.#child;
    this.#hold(child, true);
    const timer = setTimeout(() => {
      if (this.#current?.job !== job) return;
      this.#current = undefined;
      this.#child = undefined;
      child.kill('SIGKILL');
      job.reject(new TorchfoldError(`Opening ${job.file} in a separate process took more than ${job.timeoutMs} ms; ` +
        'it was stopped, and the file was not loaded here.', 'ERR_TIMEOUT'));
      this.#pump();
    }, job.timeoutMs);
    this.#current = { job, opened: false, timer };
    this.#stderr = '';
    child.stdin.write(JSON.stringify({ id: job.id, path: job.file, device: job.device, verify: job.verify }) + '\n');
  }

  #onData(child: ChildProcessWithoutNullStreams, d: string): void {
    if (child !== this.#child) return;
    this.#buffer += d;
    let nl: number;
    while ((nl = this.#buffer.indexOf('\n')) >= 0) {
      const line = this.#buffer.slice(0, nl);
      this.#buffer = this.#buffer.slice(nl + 1);
      let reply: ProbeReply;
      try { reply = JSON.parse(line) as ProbeReply; } catch { continue; }
      const cur = this.#current;
      if (!cur || reply.id !== cur.job.id) continue;
      if (reply.opening) { cur.opened = true; continue; }
      clearTimeout(cur.timer);
      this.#current = undefined;
      this.#served++;
      if (reply.ok) cur.job.resolve();
      else cur.job.reject(new TorchfoldError(reply.message ?? 'load failed', (reply.code ?? 'ERR_TORCH') as ErrorCode));
      this.#settle(child);
    }
  }

  /** After a job: the next one, or an idle child that lets this process exit and ends soon. */
  #settle(child: ChildProcessWithoutNullStreams): void {
    if (this.#queue.length > 0) { this.#pump(); return; }
    this.#hold(child, false);
    this.#idle = setTimeout(() => {
      if (this.#child === child && !this.#current) { this.#child = undefined; child.stdin.end(); }
    }, IDLE_MS);
    this.#idle.unref();
  }

  #onExit(child: ChildProcessWithoutNullStreams, code: number | null, signal: NodeJS.Signals | null, error?: Error): void {
    if (child !== this.#child) return;  // replaced already (timeout, idle end)
    this.#child = undefined;
    const cur = this.#current;
    this.#current = undefined;
    if (cur) {
      clearTimeout(cur.timer);
      const how = error ? `could not start (${error.message})` : signal ? `was killed by ${signal}` : `exited with code ${code}`;
      const tail = lastLines(this.#stderr, 5);
      const words = tail ? `\nIts last words:\n${tail}` : '';
      if (cur.opened && this.#served > 0 && !cur.job.retried) {
        // A child that opened other files first may have been damaged by one of
        // them (libtorch can corrupt its heap on a bad file and die later): try
        // this file again in a fresh child before blaming it.
        this.#queue.unshift({ ...cur.job, retried: true });
      } else if (cur.opened) {
        cur.job.reject(new TorchfoldError(`${cur.job.file} is damaged or hostile: the process that opened it with libtorch ` +
          `${how}, so it was not loaded into this process.${words}`, 'ERR_FILE_CORRUPT'));
      } else {
        // It died before it reached the file: the isolation itself failed.
        cur.job.reject(new TorchfoldError(`Cannot open ${cur.job.file} in a separate process: the process ${how} ` +
          `before it opened the file.${words}`, 'ERR_IO'));
      }
    }
    this.#pump();
  }
}

let prober: Prober | undefined;

/**
 * Resolves when a child process opened `file` without trouble; rejects with
 * the child's own error when the load failed there, with ERR_FILE_CORRUPT when
 * the child crashed on it, and with ERR_TIMEOUT when it took too long.
 */
export function probeInChild(file: string, device: string, verify: boolean, timeoutMs: number): Promise<void> {
  prober ??= new Prober();
  return prober.probe(file, device, verify, timeoutMs);
}
