// Faults and data safety, the fast subset of scripts/stress/faults.js: a save
// SIGKILLed mid-write, a save and a CLI batch onto a full filesystem, and a
// CLI batch stopped by SIGTERM then resumed. (Ctrl-C + --resume is in
// cli.test.ts.) Everything that may die runs in a child process.
import { ChildProcess, spawn } from 'child_process';
import { createHash } from 'crypto';
import { createRequire } from 'module';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load, readExtraFiles } from '../lib';
import { model, ROOT } from './helpers/fixtures';

const CLI = path.join(ROOT, 'dist', 'cli', 'main.js');
const DIST = path.join(ROOT, 'dist');
const STRESS = path.join(ROOT, 'scripts', 'stress', 'faults.js');
const DEMO = path.join(ROOT, 'models', 'demo.pt');

interface SaveFacts {
  name: string; skipped?: string; exit: number | string | null; outcome: 'saved' | 'rejected' | 'died';
  code: string | null; message: string | null; isTorchfoldError: boolean; stderr: string; intact: boolean;
  oldLoads: true | string; temps: string[]; freeLostBytes: number | null;
}
interface DiskFacts {
  strategy: 'tmpfs' | 'unshare' | 'rlimit' | null; reason?: string; error?: string; limit: number;
  saves: SaveFacts[];
  cli: {
    exit: number | string | null; stdout: string; stderr: string; temps: string[];
    outputs: { name: string; complete: boolean }[];
    report: { results: { input: string; status: string; error: { code: string; message: string } | null }[] } | null;
  };
}
const req = createRequire(__filename);
const faults = req(STRESS) as {
  diskFullProbe(o: { root: string; dist: string; tmp: string; env?: NodeJS.ProcessEnv }): Promise<DiskFacts>;
};

let scratch: string;
beforeAll(() => {
  for (const f of [CLI, path.join(DIST, 'index.js')]) {
    if (!fs.existsSync(f)) throw new Error(`${f} is missing: build it first (npx tsc -p tsconfig.json)`);
  }
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-faults-'));
});
afterAll(() => { if (scratch) fs.rmSync(scratch, { recursive: true, force: true }); });

const fresh = (name: string) => fs.mkdtempSync(path.join(scratch, `${name}-`));
const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const temporaries = (dir: string) => fs.readdirSync(dir).filter((n) => n.includes('.tmp-'));
const env = () => ({ ...process.env, NO_COLOR: '1' });

interface Result { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }
interface Running { child: ChildProcess; done: Promise<Result>; stdoutMatches(re: RegExp): Promise<boolean> }

/** A node child with piped output; stdoutMatches resolves true once stdout matches, false if it exits first. */
function start(args: string[], cwd: string, stdin: 'ignore' | 'pipe' = 'ignore'): Running {
  const child = spawn(process.execPath, args, { cwd, env: env(), stdio: [stdin, 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  const waiters: { re: RegExp; resolve: (v: boolean) => void }[] = [];
  const check = () => {
    for (const w of [...waiters]) if (w.re.test(stdout)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(true); }
  };
  child.stdout!.setEncoding('utf8').on('data', (s: string) => { stdout += s; check(); });
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const done = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      for (const w of waiters.splice(0)) w.resolve(false);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { child, done, stdoutMatches: (re) => new Promise((resolve) => { waiters.push({ re, resolve }); check(); }) };
}

describe('SIGKILL during save', () => {
  it('leaves the old or the new file whole, never a partial one; the next save removes the dead writer\'s temporary folder', async () => {
    const dir = fresh('kill');
    const [refA, refB] = ['a', 'b'].map((d) => { fs.mkdirSync(path.join(dir, d)); return path.join(dir, d, 'model.pt'); });
    fs.mkdirSync(path.join(dir, 'work'));
    const target = path.join(dir, 'work', 'model.pt');
    // The two complete versions (as loaded, and fused), saved normally under the same file name.
    const ref = await start([STRESS, '--child', 'writer', JSON.stringify({ dist: DIST, src: DEMO, refs: [refA, refB] })], dir).done;
    expect(ref.code, ref.stderr).toBe(0);
    const versions = new Map([[sha256(refA), 'A'], [sha256(refB), 'B']]);
    expect(versions.size).toBe(2);
    fs.copyFileSync(refA, target);

    // A writer saves B, A, B, … over the target; it is killed right after it
    // announces save 0, 1 and 2 (each kill in a fresh writer).
    for (const n of [0, 1, 2]) {
      const w = start([STRESS, '--child', 'writer', JSON.stringify({ dist: DIST, src: DEMO, target })], dir, 'pipe');
      expect(await w.stdoutMatches(new RegExp(`^begin ${n}$`, 'm')), 'the writer reached its save').toBe(true);
      w.child.kill('SIGKILL');
      const r = await w.done;
      expect(r.signal, r.stderr).toBe('SIGKILL');
      expect(versions.get(sha256(target)), `after kill ${n + 1}: the target is one of the two complete versions`).toBeDefined();
      const m = await load(target);
      expect(m.methods).toContain('forward');
      await m.dispose();
    }

    const again = await load(refB);
    await again.save(target);
    await again.dispose();
    expect(sha256(target)).toBe(sha256(refB));
    expect(temporaries(path.join(dir, 'work')), 'temporary folders left after the next save').toEqual([]);
  });
});

describe('disk full', () => {
  let facts: DiskFacts;
  beforeAll(async () => {
    facts = await faults.diskFullProbe({ root: ROOT, dist: DIST, tmp: scratch, env: env() });
  }, 60_000);

  it('a save that runs out of space rejects with ERR_IO, leaves the old file whole and no temporary file', (ctx) => {
    if (!facts.strategy) ctx.skip(`no small filesystem: ${facts.reason}`);
    expect(facts.error).toBeUndefined();
    const tried = facts.saves.filter((s) => !s.skipped);
    expect(tried.length).toBeGreaterThanOrEqual(1);
    for (const s of tried) {
      expect({ name: s.name, exit: s.exit, stderr: s.exit === 0 ? '' : s.stderr }, 'the process survives')
        .toEqual({ name: s.name, exit: 0, stderr: '' });
      expect({ name: s.name, outcome: s.outcome, code: s.code, isTorchfoldError: s.isTorchfoldError })
        .toEqual({ name: s.name, outcome: 'rejected', code: 'ERR_IO', isTorchfoldError: true });
      expect(s.message).toMatch(/model\.pt/);
      expect({ name: s.name, intact: s.intact, loads: s.oldLoads }).toEqual({ name: s.name, intact: true, loads: true });
      expect({ name: s.name, temps: s.temps }).toEqual({ name: s.name, temps: [] });
      if (s.freeLostBytes !== null) expect({ name: s.name, freeLostBytes: s.freeLostBytes }).toEqual({ name: s.name, freeLostBytes: 0 });
    }
  });

  it('the CLI fails that input with ERR_IO (exit 1), writes the others, and leaves nothing partial', (ctx) => {
    if (!facts.strategy) ctx.skip(`no small filesystem: ${facts.reason}`);
    const c = facts.cli;
    expect({ exit: c.exit, stderr: c.exit === 1 ? '' : c.stderr }).toEqual({ exit: 1, stderr: '' });
    expect(c.report, 'the report is written').not.toBeNull();
    const status = Object.fromEntries(c.report!.results.map((x) => [path.basename(x.input), [x.status, x.error?.code ?? null]]));
    expect(status).toEqual({ 'a.pt': ['failed', 'ERR_IO'], 'b.pt': ['done', null] });
    expect(c.stdout).toMatch(/ERR_IO/);
    expect(c.outputs).toEqual([{ name: 'b.pt', complete: true }]);
    expect(c.temps).toEqual([]);
  });
});

describe('SIGTERM during a CLI batch', () => {
  it('exits 143 with finished outputs whole and none partial; --resume then matches an uninterrupted run', async () => {
    const dir = fresh('sigterm');
    const names = ['m1.pt', 'm2.pt', 'm3.pt', 'm4.pt'];
    for (const sub of ['ref', 'run']) {
      fs.mkdirSync(path.join(dir, sub, 'in'), { recursive: true });
      for (const n of names) fs.copyFileSync(model('mobilenet_v2_traced').path, path.join(dir, sub, 'in', n));
    }
    const args = ['optimize', 'in', '--out-dir', 'out', '--quiet'];
    const ref = await start([CLI, ...args], path.join(dir, 'ref')).done;
    expect(ref.code, ref.stderr).toBe(0);
    const expected = Object.fromEntries(names.map((n) => [n, sha256(path.join(dir, 'ref', 'out', n))]));

    const cwd = path.join(dir, 'run');
    const job = start([CLI, ...args, '--report', 'r.json'], cwd);
    expect(await job.stdoutMatches(/^ok /m), 'one input finished').toBe(true);
    job.child.kill('SIGTERM');
    const r = await job.done;
    expect(r.code, r.stderr).toBe(143);

    const report = JSON.parse(fs.readFileSync(path.join(cwd, 'r.json'), 'utf8')) as {
      interrupted: boolean; results: { input: string; status: string }[];
    };
    expect(report.interrupted).toBe(true);
    const status = Object.fromEntries(report.results.map((x) => [path.basename(x.input), x.status]));
    const done = names.filter((n) => status[n] === 'done');
    expect(done.length).toBeGreaterThanOrEqual(1);
    expect(names.filter((n) => status[n] !== 'done').every((n) => status[n] === 'interrupted'), JSON.stringify(status)).toBe(true);
    expect(fs.readdirSync(path.join(cwd, 'out')).sort(), 'exactly the finished outputs').toEqual(done);
    for (const n of done) expect(sha256(path.join(cwd, 'out', n)), n).toBe(expected[n]);
    const everything = fs.readdirSync(cwd, { recursive: true }) as string[];
    expect(everything.filter((f) => f.includes('.tmp-')), 'no temporary files').toEqual([]);

    const resumed = await start([CLI, ...args, '--resume', '--json'], cwd).done;
    expect(resumed.code, resumed.stderr).toBe(0);
    const after = Object.fromEntries((JSON.parse(resumed.stdout) as { results: { input: string; status: string }[] }).results
      .map((x) => [path.basename(x.input), x.status]));
    expect(after).toEqual(Object.fromEntries(names.map((n) => [n, done.includes(n) ? 'up-to-date' : 'done'])));
    for (const n of names) expect(sha256(path.join(cwd, 'out', n)), n).toBe(expected[n]);
    const prov = JSON.parse((await readExtraFiles(path.join(cwd, 'out', names[names.length - 1]), ['torchfold.json']))['torchfold.json']);
    expect(prov.input.name).toBe(names[names.length - 1]);
  });
});
