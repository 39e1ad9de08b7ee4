// examples/batch/optimize-folder.mjs, run the way a user runs it: a child
// process over a folder tree of PyTorch-made checkpoints (test/fixtures) and
// bad files. What each file should give comes from the fixtures' manifests
// (which pairs fold, PyTorch's outputs) or from the library in this process.
import { ChildProcess, spawn } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load, TorchfoldError, TorchValue, versions } from '../lib';
import { badFile, decode, expectMatches, model, ROOT } from './helpers/fixtures';
import { manifestOf, within } from './helpers/subdir';

const SCRIPT = path.join(ROOT, 'examples', 'batch', 'optimize-folder.mjs');

type Tree = Parameters<typeof decode>[0];
interface PairExpect { conv: string; norm: string; status: 'folded' | 'skipped'; reason: string | null }
interface FuseCase { file: string; inputs: Tree[]; output: Tree; expect: { norms: number; pairs: PairExpect[] | null } }
const fuseCases = manifestOf<{ cases: Record<string, FuseCase> }>('fuse').cases;

interface FileResult {
  input: string; output: string | null; status: 'ok' | 'failed' | 'interrupted' | 'not-started';
  error: { code: string; message: string } | null; pairs: number; folded: number;
  skipped: { conv: string; norm: string; reason: string }[]; maxAbsError: number | null; validationPassed: boolean | null;
  timings: Record<string, unknown>; sizes: { input: number | null; output: number | null };
}
interface Report {
  versions: Record<string, unknown>; interrupted: boolean; options: Record<string, unknown>;
  totals: { files: number; ok: number; failed: number; interrupted: number; notStarted: number; pairs: number; folded: number; skipped: number };
  files: FileResult[];
}
interface Result { code: number | null; stderr: string }

let scratch: string;
beforeAll(() => {
  const entry = path.join(ROOT, 'dist', 'index.mjs');
  if (!fs.existsSync(entry)) throw new Error(`${entry} is missing: the example imports 'torchfold' from dist/ (npm run build:ts)`);
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-example-batch-'));
});
afterAll(() => { if (scratch) fs.rmSync(scratch, { recursive: true, force: true }); });

function start(args: string[], cwd: string): { child: ChildProcess; done: Promise<Result>; stderrMatches(re: RegExp): Promise<void> } {
  const child = spawn(process.execPath, [SCRIPT, ...args], { cwd, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const waiters: { re: RegExp; resolve: () => void }[] = [];
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    stderr += s;
    for (const w of [...waiters]) if (w.re.test(stderr)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(); }
  });
  const done = new Promise<Result>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stderr }));
  });
  const stderrMatches = (re: RegExp) => Promise.race([
    new Promise<void>((resolve) => { waiters.push({ re, resolve }); if (re.test(stderr)) resolve(); }),
    done.then((r) => { throw new Error(`exited (${r.code}) before stderr matched ${re}:\n${r.stderr}`); }),
  ]);
  return { child, done, stderrMatches };
}

/** Copies `from` to dir/rel, making the folders. */
function put(from: string, dir: string, rel: string): string {
  const to = path.join(dir, rel);
  fs.mkdirSync(path.dirname(to), { recursive: true });
  fs.copyFileSync(from, to);
  return to;
}

/** Every file under dir (relative paths, sorted) with its sha256. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of fs.readdirSync(dir, { recursive: true }) as string[]) {
    const full = path.join(dir, rel);
    if (fs.statSync(full).isFile()) out[rel] = createHash('sha256').update(fs.readFileSync(full)).digest('hex');
  }
  return out;
}

const codeOfLoad = (file: string) => load(file).then(
  async (m) => { await m.dispose(); return 'loaded'; },
  (e: unknown) => (e instanceof TorchfoldError ? e.code : String(e)));

const byInput = (report: Report) => Object.fromEntries(report.files.map((f) => [f.input, f]));

describe('examples/batch/optimize-folder.mjs', () => {
  it('optimizes a tree of checkpoints, reports a bad file with its code, exits 1; outputs give PyTorch\'s results', async () => {
    const dir = fs.mkdtempSync(path.join(scratch, 'tree-'));
    const inDir = path.join(dir, 'in');
    // Conv → BatchNorm fixtures that all take a [2, 4, 8, 8] input: folded, skipped (with reasons), nested folders.
    const models: Record<string, string> = {
      'conv2d_bias_g1_scripted.pt': 'conv2d_bias_g1_scripted',
      'a/skip_used_twice.pt': 'skip_used_twice',
      'a/b/tied.pth': 'site_copy_tied',
      'c/cross_boundary_traced.pt': 'cross_boundary_traced',
      'c/d/functional_scripted.pt': 'functional_scripted',
      'c/d/frozen_bn.PT': 'frozen_bn',
    };
    for (const [rel, name] of Object.entries(models)) put(path.join(ROOT, 'test', 'fixtures', 'fuse', fuseCases[name].file), inDir, rel);
    const bad = { 'a/x.pt': path.join(dir, 'not-a-model.txt'), 'c/truncated.pt': badFile('truncated') };
    fs.writeFileSync(bad['a/x.pt'], 'this is not a checkpoint\n');
    for (const [rel, from] of Object.entries(bad)) put(from, inDir, rel);
    put(bad['a/x.pt'], inDir, 'c/notes.txt');  // not *.pt / *.pth: not an input
    const before = snapshot(inDir);

    const r = await start(['in', 'out', '--shape', '2,4,8,8', '--validate', '--concurrency', '2', '--report', 'reports/run.json'], dir).done;
    expect(r.code, r.stderr).toBe(1);
    expect(snapshot(inDir), 'inputs untouched').toEqual(before);

    const report = JSON.parse(fs.readFileSync(path.join(dir, 'reports', 'run.json'), 'utf8')) as Report;
    expect(fs.readdirSync(path.join(dir, 'reports')), 'no temporary file left').toEqual(['run.json']);
    expect(report.versions).toMatchObject({ ...versions });
    expect(report.interrupted).toBe(false);
    const inputs = [...Object.keys(models), ...Object.keys(bad)].map((rel) => path.join('in', rel));
    expect(report.files.map((f) => f.input).sort()).toEqual(inputs.sort());
    const files = byInput(report);

    // The bad files: failed with the code the library gives them, nothing written.
    for (const [rel, from] of Object.entries(bad)) {
      const f = files[path.join('in', rel)];
      const code = await codeOfLoad(from);
      expect(code).toMatch(/^ERR_/);
      expect(f.status, rel).toBe('failed');
      expect(f.error?.code, rel).toBe(code);
      expect(f.error?.message, rel).toBeTruthy();
      expect(f.output, rel).toBeNull();
      expect(r.stderr).toContain(`${rel}  FAILED ${code}`);
    }

    // The good ones: the pairs the fixture says fold, the skipped ones with their reasons, PyTorch's outputs.
    let folded = 0, pairs = 0, skipped = 0;
    for (const [rel, name] of Object.entries(models)) {
      const c = fuseCases[name];
      const expected = c.expect.pairs!;
      const f = files[path.join('in', rel)];
      expect(f.status, `${rel}: ${JSON.stringify(f.error)}`).toBe('ok');
      expect(f.error).toBeNull();
      expect(f.output).toBe(path.join('out', rel));
      expect(f.pairs, rel).toBe(expected.length);
      expect(f.folded, rel).toBe(expected.filter((p) => p.status === 'folded').length);
      const expectSkipped = expected.filter((p) => p.status === 'skipped');
      expect(f.skipped.map((s) => `${s.conv}->${s.norm}`).sort(), rel).toEqual(expectSkipped.map((p) => `${p.conv}->${p.norm}`).sort());
      for (const p of expectSkipped) {
        const got = f.skipped.find((s) => s.conv === p.conv && s.norm === p.norm)!;
        if (p.reason) expect(got.reason.toLowerCase(), rel).toContain(p.reason.toLowerCase());
      }
      expect(f.validationPassed, rel).toBe(true);
      expect(f.maxAbsError, rel).toBeTypeOf('number');
      expect(f.maxAbsError!, rel).toBeLessThanOrEqual(1e-4);
      expect(f.sizes.input, rel).toBe(fs.statSync(path.join(inDir, rel)).size);
      expect(f.sizes.output, rel).toBe(fs.statSync(path.join(dir, 'out', rel)).size);
      expect(r.stderr).toContain(`${rel}  folded ${f.folded}/${f.pairs}`);
      folded += f.folded; pairs += f.pairs; skipped += f.skipped.length;

      const m = await load(path.join(dir, 'out', rel));
      expect((await m.inspect()).batchNorms.before, `${rel}: norms left`).toBe(c.expect.norms - f.folded);
      const y = await m.forward(...(within('fuse', c.inputs) as Tree[]).map(decode));
      expectMatches(y, within('fuse', c.output), 1e-5, rel);
      await m.dispose();
    }
    expect(report.totals).toMatchObject({
      files: inputs.length, ok: Object.keys(models).length, failed: Object.keys(bad).length, interrupted: 0, notStarted: 0,
      folded, pairs, skipped,
    });
    // The tree is mirrored: exactly one output per good input, nothing else.
    expect(Object.keys(snapshot(path.join(dir, 'out'))).sort()).toEqual(Object.keys(models).sort());
  });

  it('without --shape: no validation; outputs keep every method and give PyTorch\'s outputs; exit 0', async () => {
    const dir = fs.mkdtempSync(path.join(scratch, 'plain-'));
    const names = ['convbn_scripted', 'convbn_traced', 'multi_method'];
    for (const n of names) put(model(n).path, path.join(dir, 'in'), `m/${n}.pt`);
    const r = await start(['in', 'out'], dir).done;
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'report.json'), 'utf8')) as Report;
    const files = byInput(report);
    for (const n of names) {
      const fixture = model(n);
      const f = files[path.join('in', 'm', `${n}.pt`)];
      // The library in this process says how many pairs the input has and fold.
      const original = await load(fixture.path);
      const plan = await original.inspect();
      await original.dispose();
      expect(f.status).toBe('ok');
      expect([f.pairs, f.folded], n).toEqual([plan.pairs.length, plan.folded]);
      expect(f.maxAbsError, n).toBeNull();
      const m = await load(path.join(dir, 'out', 'm', `${n}.pt`));
      expect([...m.methods].sort(), n).toEqual([...fixture.methods].sort());
      for (const c of fixture.cases) {
        const y: TorchValue = await m.run(c.method, ...c.inputs.map(decode));
        expectMatches(y, c.output, c.atol ?? 1e-5, `${n}.${c.method}`);
      }
      await m.dispose();
    }
  });

  it('Ctrl-C: stops starting files, writes the report, exits 130; finished outputs are complete', async () => {
    const dir = fs.mkdtempSync(path.join(scratch, 'sigint-'));
    const names = ['a.pt', 'b.pt', 'c.pt', 'd.pt', 'e.pt'];
    for (const n of names) put(model('resnet18_traced').path, path.join(dir, 'in'), n);
    const before = snapshot(path.join(dir, 'in'));
    const job = start(['in', 'out', '--shape', '1,3,64,64'], dir);
    await job.stderrMatches(/^\[1\/5\] /m);
    job.child.kill('SIGINT');
    const r = await job.done;
    expect(r.code, r.stderr).toBe(130);
    expect(snapshot(path.join(dir, 'in'))).toEqual(before);
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'out', 'report.json'), 'utf8')) as Report;
    expect(report.interrupted).toBe(true);
    const t = report.totals;
    expect(t.ok).toBeGreaterThanOrEqual(1);
    expect(t.interrupted + t.notStarted).toBeGreaterThanOrEqual(1);
    expect(t.ok + t.failed + t.interrupted + t.notStarted).toBe(names.length);
    const ok = report.files.filter((f) => f.status === 'ok').map((f) => path.basename(f.input));
    expect(Object.keys(snapshot(path.join(dir, 'out'))).sort()).toEqual([...ok, 'report.json'].sort());
    const m = await load(path.join(dir, 'out', ok[0]));
    expect((await m.inspect()).batchNorms.before).toBe(0);
    await m.dispose();
  });

  it('usage errors exit 2 and write nothing', async () => {
    const dir = fs.mkdtempSync(path.join(scratch, 'usage-'));
    put(model('convbn_scripted').path, path.join(dir, 'in'), 'm.pt');
    fs.writeFileSync(path.join(dir, 'file'), '');
    const cases: [string[], RegExp][] = [
      [[], /expected IN_DIR and OUT_DIR/],
      [['in'], /expected IN_DIR and OUT_DIR/],
      [['in', 'out', '--frobnicate'], /Unknown option '--frobnicate'/],
      [['in', 'out', '--shape', '1,x,3'], /--shape takes sizes/],
      [['in', 'out', '--concurrency', '0'], /--concurrency takes a whole number/],
      [['in', 'out', '--validate'], /--validate needs a sample input/],
      [['missing', 'out'], /IN_DIR is not a folder/],
      [['in', 'file'], /OUT_DIR is not a folder/],
      [['in', 'in'], /OUT_DIR must differ from IN_DIR/],
      [['--demo'], /--demo takes one folder/],
    ];
    const results = await Promise.all(cases.map(([args]) => start(args, dir).done));
    cases.forEach(([args, message], i) => {
      expect(results[i].code, args.join(' ')).toBe(2);
      expect(results[i].stderr, args.join(' ')).toMatch(message);
      expect(results[i].stderr, args.join(' ')).toContain('usage: node optimize-folder.mjs');
    });
    expect(fs.readdirSync(dir).sort()).toEqual(['file', 'in']);
    expect(fs.readdirSync(path.join(dir, 'in'))).toEqual(['m.pt']);
  });
});
