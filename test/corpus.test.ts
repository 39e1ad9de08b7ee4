/**
 * The bad-file corpus made by the fixture script (scripts/make_bad_corpus.py,
 * seed 1): hand-made bad files and 240 seeded mutants of a real model. Each
 * file is opened in a throwaway child process with no protection, as a service
 * would, so a crash is observed rather than suffered; then the files that
 * crashed are opened again with { isolate: true } in this process.
 */
import { spawnSync } from 'child_process';
import { createRequire } from 'module';
import * as os from 'os';
import * as fs from 'fs';
import * as path from 'path';
import { beforeAll, describe, expect, it } from 'vitest';
import { load, TorchfoldError, verifyFile, versions } from '../lib';
import { FIXTURES, model, ROOT } from './helpers/fixtures';

const req = createRequire(__filename);
interface Outcome {
  load?: string; loadMessage?: string; forward?: string; fuse?: string; fusedForward?: string; save?: string;
  output?: (number | string)[]; crashed?: string; signal?: string;
}
interface Crash { file: string; stage: string; signal: string | null }
const corpus = req('../scripts/stress/corpus.js') as {
  tryFiles(files: string[], o?: { verify?: boolean }): Promise<{ results: Map<string, Outcome>; crashes: Crash[] }>;
  corpusFiles(dir: string): string[];
  torchOutputs(files: string[], input: number[]): Record<string, (number | string)[] | { error: string } | null>;
  LOAD_CODES: Set<string>;
};

const DIR = path.join(FIXTURES, 'bad');
interface Manifest {
  base: Record<string, string>;
  mutants: Record<string, { kind: string; records?: string[] }>;
}
const manifest = (): Manifest => JSON.parse(fs.readFileSync(path.join(DIR, 'corpus.json'), 'utf8')) as Manifest;

describe('bad-file corpus (seed 1)', () => {
  let results: Map<string, Outcome>;
  let crashes: Crash[];
  // Files that crash libtorch every time they are opened alone, found once and shared.
  let steadyFound: Promise<Crash[]> | undefined;
  const steadyCrashes = (): Promise<Crash[]> => (steadyFound ??= (async () => {
    // With libtorch 1.13 this corpus holds code edits that crash its class-constant parser
    // (a misspelled class attribute): those must be here, or the isolation goes untested.
    // Some crashes are not repeatable (libtorch damages its heap on one file and dies on a
    // later one, or crashes on a file only now and then), so only files that crash every
    // time on their own are opened here, where a load that got through would crash this test.
    // Which files crash in the corpus run depends on the heap the earlier files left, so on
    // 1.13 the candidates are the crashes of this run and of two more.
    const candidates = new Map(crashes.map((c) => [c.file, c]));
    if (versions.libtorch.startsWith('1.13')) {
      for (let i = 0; i < 2; i++) for (const c of (await corpus.tryFiles(files)).crashes) if (!candidates.has(c.file)) candidates.set(c.file, c);
    }
    const steady: Crash[] = [];
    for (const c of candidates.values()) {
      let n = 0;
      for (let i = 0; i < 3; i++) n += (await corpus.tryFiles([c.file])).crashes.length;
      if (n === 3) steady.push(c);
    }
    return steady;
  })());
  const files = corpus.corpusFiles(DIR);

  beforeAll(async () => {
    ({ results, crashes } = await corpus.tryFiles(files));
  });

  it('has the hand-made cases and at least 200 mutants', () => {
    const m = manifest();
    expect(Object.keys(m.mutants).length).toBeGreaterThanOrEqual(200);
    expect(Object.keys(m.base)).toEqual(expect.arrayContaining(['empty.pt', 'random.pt', 'zip-no-torchscript.pt',
      'truncated-half.pt', 'folder.pt', 'pickle.pt']));
    expect(results.size).toBe(files.length);
  });

  it('every file loads or is refused with a load error code; nothing dies after a load', async () => {
    for (const [file, r] of results) {
      if (r.crashed) continue;
      expect(r.load === 'ok' || corpus.LOAD_CODES.has(r.load ?? ''), `${path.basename(file)}: ${r.load} ${r.loadMessage}`).toBe(true);
      if (r.load === 'ok') {
        // Whatever a damaged model does after loading is a clean result or a clean error.
        for (const stage of ['forward', 'fuse', 'save'] as const) {
          expect(r[stage] === 'ok' || /^ERR_/.test(r[stage] ?? ''), `${path.basename(file)} ${stage}: ${r[stage]}`).toBe(true);
        }
      }
    }
    // Crashes happen inside libtorch's own loader (its compiler on damaged code). Rarely, a
    // process that met such a file earlier dies later, on another file: libtorch damaged its
    // heap without dying at once. So a death after a load counts only if that file, opened
    // alone in a fresh process, kills it too.
    const own: Crash[] = [];
    for (const c of crashes.filter((x) => x.stage !== 'load')) {
      for (let i = 0; i < 3; i++) {
        const again = await corpus.tryFiles([c.file]);
        if (again.crashes.length > 0) { own.push(again.crashes[0]); break; }
      }
    }
    expect(own).toEqual([]);
  });

  it('the hand-made bad files get the code that says what they are', () => {
    const code = (name: string) => results.get(path.join(DIR, 'base', name))?.load;
    for (const name of ['empty.pt', 'random.pt', 'zip-no-torchscript.pt', 'truncated-half.pt', 'truncated-header.pt',
      'pickle.pt', 'gzip.pt', 'text.pt', 'no-central-directory.pt']) {
      expect(code(name), name).toBe('ERR_NOT_TORCHSCRIPT');
    }
    expect(code('folder.pt')).toBe('ERR_NOT_A_FILE');
    expect(code('does-not-exist.pt')).toBe('ERR_FILE_NOT_FOUND');
  });

  it('a tensor record shorter than its tensor is refused (libtorch 1.13 read past it and crashed)', () => {
    const m = manifest();
    const shortened = Object.entries(m.mutants).filter(([, d]) => d.kind === 'shorten' && /\/data\/\d+$/.test(d.records?.[0] ?? ''));
    expect(shortened.length).toBeGreaterThan(5);
    for (const [name] of shortened) {
      const r = results.get(path.join(DIR, 'mutants', name));
      expect(r?.load, name).toBe('ERR_FILE_CORRUPT');
      expect(r?.loadMessage, name).toMatch(/needs \d+ bytes but its record .* (holds \d+|is empty)|do not match the archive's checksums/);
    }
  });

  it('the damaged files that load give exactly what PyTorch gives on the same file', () => {
    const loaded = [...results].filter(([, r]) => r.load === 'ok' && r.forward === 'ok').map(([f]) => f);
    expect(loaded.length).toBeGreaterThan(20);
    const theirs = corpus.torchOutputs(loaded, [1, 3, 8, 8]);
    for (const f of loaded) {
      const expected = theirs[f];
      const mine = results.get(f)?.output;
      expect(Array.isArray(expected), `${path.basename(f)}: PyTorch said ${JSON.stringify(expected)}`).toBe(true);
      expect(mine?.length, path.basename(f)).toBe((expected as unknown[]).length);
      (expected as (number | string)[]).forEach((v, i) => {
        if (typeof v === 'string' || typeof mine![i] === 'string') expect(mine![i], path.basename(f)).toBe(v);
        else expect(Math.abs((mine![i] as number) - v), path.basename(f)).toBeLessThanOrEqual(1e-5 * (1 + Math.abs(v)));
      });
    }
  });

  it('a file that crashes libtorch is refused with ERR_FILE_CORRUPT under { isolate: true }, and this process lives', async () => {
    const steady = await steadyCrashes();
    if (versions.libtorch.startsWith('1.13')) expect(steady.length).toBeGreaterThan(0);
    for (const c of steady) {
      const e = await load(c.file, { isolate: true }).then(() => undefined, (err: unknown) => err);
      expect(e, path.basename(c.file)).toBeInstanceOf(TorchfoldError);
      expect((e as TorchfoldError).code).toBe('ERR_FILE_CORRUPT');
      expect((e as TorchfoldError).message).toMatch(new RegExp(`killed by ${c.signal}|exited with code`));
    }
    // The same files opened with isolation when they are fine still load.
    const ok = await load(model('convbn_scripted').path, { isolate: true });
    expect(ok.methods).toContain('forward');
    ok.dispose();
  });

  it('CLI optimize --verify --isolate fails each damaged input with its code, survives a crashing one, finishes the good one', async () => {
    const steady = await steadyCrashes();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-cli-safety-'));
    const flipped = Object.entries(manifest().mutants).find(([, d]) => d.kind === 'weights')![0];
    // Only a file that crashed every time alone: one that crashed once in the corpus run may
    // load cleanly in the CLI's child and fail with another code (seen on 1.13: ERR_UNSUPPORTED).
    const inputs = [path.join(DIR, 'mutants', flipped), model('convbn_scripted').path, ...steady.slice(0, 1).map((c) => c.file)];
    const r = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'cli', 'main.js'), 'optimize', ...inputs, '--verify', '--isolate',
      '--out-dir', out, '--json', '-q'], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    expect(r.status, r.stderr).toBe(1);
    const report = JSON.parse(r.stdout) as { results: { input: string; status: string; error?: { code: string } }[] };
    const byName = new Map(report.results.map((x) => [path.basename(x.input), x]));
    expect(byName.get(flipped)?.error?.code).toBe('ERR_FILE_CORRUPT');
    expect(byName.get('convbn_scripted.pt')?.status).toBe('done');
    if (versions.libtorch.startsWith('1.13')) expect(steady.length).toBeGreaterThan(0);
    for (const c of steady.slice(0, 1)) expect(byName.get(path.basename(c.file))?.error?.code).toBe('ERR_FILE_CORRUPT');
    expect(fs.readdirSync(out)).toEqual(['convbn_scripted.pt']);
    fs.rmSync(out, { recursive: true, force: true });
  });

  it('isolation passes on the child\'s own error code for files that merely fail', async () => {
    const e = await load(path.join(DIR, 'base', 'pickle.pt'), { isolate: true }).then(() => undefined, (err: unknown) => err);
    expect((e as TorchfoldError).code).toBe('ERR_NOT_TORCHSCRIPT');
    const t = await load(model('convbn_scripted').path, { isolate: { timeoutMs: 1 } }).then(() => undefined, (err: unknown) => err);
    expect((t as TorchfoldError).code).toBe('ERR_TIMEOUT');
    expect(() => load(model('convbn_scripted').path, { isolate: { timeoutMs: -1 } })).toThrow(/timeoutMs/);
  });
});

describe('integrity check (CRC-32)', () => {
  it('bytes flipped inside a tensor load silently without verify, and are refused with it, naming the record', async () => {
    const m = manifest();
    const flipped = Object.entries(m.mutants).filter(([, d]) => d.kind === 'weights');
    expect(flipped.length).toBeGreaterThan(10);
    const plain = await corpus.tryFiles(flipped.map(([n]) => path.join(DIR, 'mutants', n)));
    const checked = await corpus.tryFiles(flipped.map(([n]) => path.join(DIR, 'mutants', n)), { verify: true });
    for (const [name, d] of flipped) {
      const file = path.join(DIR, 'mutants', name);
      expect(plain.results.get(file)?.load, name).toBe('ok');
      expect(checked.results.get(file)?.load, name).toBe('ERR_FILE_CORRUPT');
      expect(checked.results.get(file)?.loadMessage, name).toContain(`record ${d.records![0]}: CRC-32 is`);
    }
    const report = await verifyFile(path.join(DIR, 'mutants', flipped[0][0]));
    expect(report.ok).toBe(false);
    expect(report.problems.join('\n')).toContain(flipped[0][1].records![0]);
  });

  it('intact models pass, with and without verify', async () => {
    for (const name of ['convbn_scripted', 'resnet18_traced', 'multi_method']) {
      expect(await verifyFile(model(name).path)).toEqual({ ok: true, problems: [] });
      const m = await load(model(name).path, { verify: true });
      m.dispose();
    }
  });

  it('verify is checked like every option', () => {
    expect(() => load(model('convbn_scripted').path, { verify: 'yes' as never })).toThrow(/options.verify/);
  });
});


describe('file and setup errors of the new entry points', () => {
  it('verifyFile gives load()\'s codes for a missing file, a folder and a pickle', async () => {
    const code = (p: string) => verifyFile(p).then(() => 'ok', (e: TorchfoldError) => e.code);
    expect(await code(path.join(DIR, 'base', 'does-not-exist.pt'))).toBe('ERR_FILE_NOT_FOUND');
    expect(await code(path.join(DIR, 'base', 'folder.pt'))).toBe('ERR_NOT_A_FILE');
    expect(await code(path.join(DIR, 'base', 'pickle.pt'))).toBe('ERR_NOT_TORCHSCRIPT');
  });

  it('isolate reports a child that cannot load the addon with that error, not as a damaged file', () => {
    // The parent has its addon; the child it starts is pointed at one that does not exist.
    const script = `
      const tf = require(${JSON.stringify(path.join(ROOT, 'dist', 'index.js'))});
      tf.getNumThreads();
      process.env.TORCHFOLD_ADDON = '/nonexistent/torchfold.node';
      tf.load(process.argv[1], { isolate: true }).then(() => console.log('loaded'), (e) => console.log(e.code));`;
    const r = spawnSync(process.execPath, ['-e', script, model('convbn_scripted').path], { encoding: 'utf8' });
    expect(r.stdout.trim(), r.stderr).toBe('ERR_NATIVE_LOAD');
  });
});
