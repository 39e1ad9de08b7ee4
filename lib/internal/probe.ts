/**
 * The child process behind load(file, { isolate: true }): opens the file with
 * the same native load and checks as load(), then reports one JSON line on
 * stdout and exits. If libtorch crashes on the file, only this process dies.
 * Not part of the public API.
 */
import { native } from '../binding';

interface ProbeRequest { path: string; device: string; verify: boolean }

async function main(): Promise<void> {
  const request = JSON.parse(process.argv[2] ?? '{}') as ProbeRequest;
  let reply: Record<string, unknown>;
  try {
    native();
  } catch (e) {
    reply = { ok: false, setup: true, code: (e as { code?: string }).code ?? 'ERR_NATIVE_LOAD', message: (e as Error).message };
    process.stdout.write(JSON.stringify(reply) + '\n', () => process.exit(0));
    return;
  }
  // From here on, a death of this process is the file's doing.
  process.stdout.write('{"opening":true}\n');
  try {
    const m = await native().load(request.path, request.device, request.verify);
    reply = { ok: true, methods: m.methods() };
    m.dispose();
  } catch (e) {
    const err = e as { code?: string; message?: string };
    reply = { ok: false, code: err.code ?? 'ERR_TORCH', message: err.message ?? String(e) };
  }
  process.stdout.write(JSON.stringify(reply) + '\n', () => process.exit(0));
}

void main();
