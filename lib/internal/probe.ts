/**
 * The child process behind load(file, { isolate: true }) (lib/isolate.ts).
 * Reads one JSON request per line on stdin ({ id, path, device, verify }),
 * opens that file with the same native load and checks as load(), and answers
 * on stdout: first { id, opening: true }, then { id, ok } or { id, ok: false,
 * code, message }. One file at a time, so if libtorch crashes on a file, the
 * parent knows which. Ends when stdin closes. Not part of the public API.
 */
import * as readline from 'readline';
import { native, NativeBinding } from '../binding';

interface ProbeRequest { id: number; path: string; device: string; verify: boolean }

function say(reply: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(reply) + '\n');
}

function errorReply(id: number, e: unknown, fallback: string): Record<string, unknown> {
  const err = e as { code?: string; message?: string };
  return { id, ok: false, code: err.code ?? fallback, message: err.message ?? String(e) };
}

async function main(): Promise<void> {
  let binding: NativeBinding | undefined;
  let setupError: unknown;
  try {
    binding = native();
  } catch (e) {
    setupError = e;
  }
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const request = JSON.parse(line) as ProbeRequest;
    if (!binding) {
      say(errorReply(request.id, setupError, 'ERR_NATIVE_LOAD'));
      continue;
    }
    // From here until the answer, a death of this process is the file's doing.
    say({ id: request.id, opening: true });
    try {
      const m = await binding.load(request.path, request.device, request.verify);
      m.dispose();
      say({ id: request.id, ok: true });
    } catch (e) {
      say(errorReply(request.id, e, 'ERR_TORCH'));
    }
  }
}

void main();
