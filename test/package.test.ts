// The package as a user gets it: `npm pack`, then `npm install` of the
// tarball into an empty project, then the README's quick start from ES
// modules and CommonJS (the code blocks are taken from README.md as they
// are), the types under `moduleResolution: nodenext`, the CLI, and the
// build-from-source fallback when the prebuild does not load.
import { execFileSync, spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load, Tensor, versions } from '../lib';
import { ROOT, tmpDir } from './helpers/fixtures';

const dir = tmpDir('package');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const tuple = `${process.platform}-${process.arch}`;
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { name: string; version: string };

// The libtorch the prebuild was made for: this checkout's (by default pip's CPU wheel in
// .libtorch/cpu). A user points LIBTORCH at theirs; the installed package has no .libtorch.
const libtorchRoot = (JSON.parse(execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'libtorch.js'), '--json'],
  { encoding: 'utf8' })) as { root: string; source: string });

/** The environment of a user's shell: none of the npm variables of the `npm test` running this file. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && k !== 'TORCHFOLD_ADDON' && k !== 'INIT_CWD') env[k] = v;
  }
  env.LIBTORCH = libtorchRoot.source === 'system' ? 'system' : libtorchRoot.root;
  return env;
}

function run(cmd: string, args: string[], cwd: string, timeout = 300_000): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, encoding: 'utf8', env: userEnv(), timeout });
}

function ok(r: SpawnSyncReturns<string>, what: string): string {
  if (r.status !== 0) throw new Error(`${what}: exit ${r.status ?? r.signal}\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The code block after `<!-- name -->` in README.md. */
function readmeBlock(name: string): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const at = readme.indexOf(`<!-- ${name} -->`);
  if (at < 0) throw new Error(`README.md has no <!-- ${name} --> block`);
  const m = /```\w*\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!m) throw new Error(`no code block after <!-- ${name} -->`);
  return m[1];
}

function newProject(name: string): string {
  const app = path.join(dir, name);
  fs.mkdirSync(app, { recursive: true });
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }, null, 2));
  return app;
}

function npmInstall(app: string, specs: string[]): SpawnSyncReturns<string> {
  // --foreground-scripts: the install script's lines reach us (npm hides them otherwise).
  return run('npm', ['install', ...specs, '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts',
    '--loglevel=error'], app, 900_000);
}

let tarball = '';
let packed: string[] = [];
let app = '';
let install: SpawnSyncReturns<string>;

beforeAll(() => {
  const out = ok(run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], ROOT), 'npm pack');
  const info = (JSON.parse(out) as { filename: string; files: { path: string }[] }[])[0];
  tarball = path.join(dir, info.filename);
  packed = info.files.map((f) => f.path).sort();
  app = newProject('app');
  install = npmInstall(app, [tarball, '@types/node@20', 'prom-client@15']);
  ok(install, 'npm install of the tarball');
}, 900_000);

describe('npm pack', () => {
  it('holds the build, the sources for a build from source, the prebuild and its record, and the docs', () => {
    for (const f of ['package.json', 'README.md', 'LICENSE', 'CHANGELOG.md', 'dist/index.js', 'dist/index.mjs',
      'dist/index.d.ts', 'dist/index.d.mts', 'dist/cli/main.js', 'binding.gyp', 'scripts/libtorch.js',
      'scripts/install.js', 'native/core/fuse.cc', 'native/addon/addon.cc', 'models/demo.pt',
      'schema/optimize-report.schema.json', 'schema/fuse-report.schema.json', 'docs/api/README.md', 'docs/report.md',
      'examples/service/server.mjs', 'examples/batch/optimize-folder.mjs']) {
      expect(packed, f).toContain(f);
    }
    const prebuilds = packed.filter((f) => f.startsWith(`prebuilds/${tuple}/`));
    expect(prebuilds.filter((f) => f.endsWith('.node'))).toHaveLength(1);
    expect(prebuilds.filter((f) => f.endsWith('.node.json'))).toHaveLength(1);
  });

  it('holds no tests, fixtures, Python, benchmarks, source maps or libtorch', () => {
    const unwanted = packed.filter((f) => /^(test|bench|build|build-gyp|\.tmp|lib)\//.test(f) || /fixtures/.test(f) ||
      /\.(py|map|ts)$/.test(f.replace(/\.d\.m?ts$/, '')) || /(^|\/)lib(torch|c10)[^/]*\.so/.test(f));
    expect(unwanted).toEqual([]);
    expect(fs.statSync(tarball).size).toBeLessThan(30 * 2 ** 20);
  });
});

describe('installed from the tarball into an empty project', () => {
  it('the install script uses the prebuild (no compiler needed)', () => {
    expect(install.stderr + install.stdout).toContain(`torchfold: using prebuilds/${tuple}/`);
    expect(fs.existsSync(path.join(app, 'node_modules', 'torchfold', 'build'))).toBe(false);
  });

  it('the README quick start runs as an ES module and writes a fused model that matches the original', async () => {
    fs.writeFileSync(path.join(app, 'quickstart.mjs'), readmeBlock('quickstart.mjs'));
    const out = ok(run(process.execPath, ['quickstart.mjs'], app), 'quickstart.mjs');
    const m = /folded (\d+) of (\d+) pairs; max error (\S+); (\S+)x faster/.exec(out);
    expect(m, out).not.toBeNull();
    const demo = path.join(ROOT, 'models', 'demo.pt');
    const original = await load(demo);
    const plan = await original.inspect();
    expect(Number(m![1])).toBe(plan.folded);
    expect(Number(m![2])).toBe(plan.pairs.length);
    expect(out).toContain('[ 1, 10 ] float32');
    // The file it saved, loaded here, gives the original's outputs.
    const fused = await load(path.join(app, 'demo.fused.pt'));
    const x = Tensor.from(Float32Array.from({ length: 3 * 64 * 64 }, (_, i) => Math.sin(i)), [1, 3, 64, 64]);
    const [a, b] = [(await original.forward(x)) as Tensor, (await fused.forward(x)) as Tensor];
    const [ea, eb] = [a.toTypedArray() as Float32Array, b.toTypedArray() as Float32Array];
    expect(eb.length).toBe(ea.length);
    for (let i = 0; i < ea.length; i++) expect(Math.abs(eb[i] - ea[i])).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(ea[i])));
    await Promise.all([original.dispose(), fused.dispose()]);
  });

  it('the README quick start runs from CommonJS', () => {
    fs.writeFileSync(path.join(app, 'quickstart.cjs'), readmeBlock('quickstart.cjs'));
    const out = ok(run(process.execPath, ['quickstart.cjs'], app), 'quickstart.cjs');
    expect(out).toMatch(/folded \d+, skipped \d+, max error \S+/);
    expect(out).toContain('[ 2, 10 ]');
    expect(out).toContain('ERR_FILE_NOT_FOUND');
  });

  it('import and require give the same module: one addon, the same exports', () => {
    const script = `
      import { createRequire } from 'node:module';
      import * as esm from 'torchfold';
      const cjs = createRequire(import.meta.url)('torchfold');
      const names = Object.keys(esm).filter((k) => k !== 'default').sort();
      console.log(JSON.stringify({ names, cjs: Object.keys(cjs).sort(), same: esm.load === cjs.load && esm.default === cjs,
        version: esm.versions.torchfold }));`;
    fs.writeFileSync(path.join(app, 'same.mjs'), script);
    const r = JSON.parse(ok(run(process.execPath, ['same.mjs'], app), 'same.mjs')) as
      { names: string[]; cjs: string[]; same: boolean; version: string };
    expect(r.names).toEqual(r.cjs);
    expect(r.names).toEqual(expect.arrayContaining(['load', 'Tensor', 'TorchfoldError', 'versions', 'verifyFile']));
    expect(r.same).toBe(true);
    expect(r.version).toBe(pkg.version);
  });

  it('the types check under moduleResolution nodenext: the README\'s code as it is (checkJs), import and require', () => {
    // The README's blocks as they are: checkJs types their import and require() too.
    fs.writeFileSync(path.join(app, 'quickstart.mjs'), readmeBlock('quickstart.mjs'));
    fs.writeFileSync(path.join(app, 'quickstart.cjs'), readmeBlock('quickstart.cjs'));
    fs.writeFileSync(path.join(app, 'check.mts'), `import { load, Tensor, versions, type FuseReport, type ErrorCode } from 'torchfold';
// @ts-expect-error load takes a path, not a number: the types are real, not any
await load(42);
const t: Tensor = Tensor.from(new Float32Array(4), [2, 2]);
const folded = (r: FuseReport): number => r.folded;
// @ts-expect-error not an error code
const wrong: ErrorCode = 'ERR_NOPE';
export { t, folded, wrong, versions };
`);
    fs.writeFileSync(path.join(app, 'check.cts'), `import tf = require('torchfold');
const code: tf.ErrorCode = 'ERR_NATIVE_LOAD';
async function run(): Promise<number> {
  const m = await tf.load('x.pt');
  const { report } = await m.fuse({ mode: 'fold' });
  // @ts-expect-error mode is 'fold' or 'tune'
  await m.fuse({ mode: 'fast' });
  return report.skipped;
}
export { code, run };
`);
    fs.writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', strict: true, noEmit: true,
        allowJs: true, checkJs: true, types: ['node'], skipLibCheck: false },
      files: ['quickstart.mjs', 'quickstart.cjs', 'check.mts', 'check.cts'],
    }, null, 2));
    const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const r = run(process.execPath, [tsc, '-p', 'tsconfig.json'], app);
    expect(r.stdout + r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('the README\'s CLI lines run with the installed bin', () => {
    const r = run('bash', ['-euo', 'pipefail', '-c', readmeBlock('quickstart.sh')], app);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/would fold/i);
    expect(fs.existsSync(path.join(app, 'demo.fused.pt'))).toBe(true);
  });
});

describe('the examples, run from the installed package', () => {
  it('examples/batch optimizes the demo model and writes its report', () => {
    const script = path.join('node_modules', 'torchfold', 'examples', 'batch', 'optimize-folder.mjs');
    const r = run(process.execPath, [script, '--demo', 'batch-out'], app);
    expect(r.status, r.stderr).toBe(0);
    const report = JSON.parse(fs.readFileSync(path.join(app, 'batch-out', 'report.json'), 'utf8')) as
      { files: { status: string; folded: number; output: string }[] };
    expect(report.files.map((f) => f.status)).toEqual(['ok']);
    expect(report.files[0].folded).toBeGreaterThan(0);
  });

  it('examples/service serves the demo model, answers like the model as loaded, and stops on SIGTERM', async () => {
    const script = path.join('node_modules', 'torchfold', 'examples', 'service', 'server.mjs');
    const child = spawn(process.execPath, [script, '--port', '0'], { cwd: app, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const port = await new Promise<number>((resolve, reject) => {
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk: string) => {
        out += chunk;
        const ready = out.split('\n').map((l) => { try { return JSON.parse(l) as { msg?: string; port?: number }; } catch { return {}; } })
          .find((e) => e.msg === 'ready');
        if (ready?.port) resolve(ready.port);
      });
      void exited.then((code) => reject(new Error(`server exited ${code} before ready:\n${out}`)));
    });
    const health = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    const data = Array.from({ length: 3 * 64 * 64 }, (_, i) => Math.cos(i));
    const res = await fetch(`http://127.0.0.1:${port}/predict`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ shape: [1, 3, 64, 64], data }),
    });
    expect(res.status).toBe(200);
    const body = await res.json() as { shape: number[]; data: number[] };
    const original = await load(path.join(ROOT, 'models', 'demo.pt'));
    const expected = ((await original.forward(Tensor.from(Float32Array.from(data), [1, 3, 64, 64]))) as Tensor)
      .toTypedArray() as Float32Array;
    await original.dispose();
    expect(body.shape).toEqual([1, 10]);
    body.data.forEach((v, i) => expect(Math.abs(v - expected[i])).toBeLessThanOrEqual(1e-4 * (1 + Math.abs(expected[i]))));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('when no prebuild loads', () => {
  it('the install builds from source with node-gyp and uses that build', async () => {
    // The same tarball with its prebuild made unloadable (it names a library no machine has).
    const unpacked = path.join(dir, 'unpacked');
    fs.mkdirSync(unpacked);
    execFileSync('tar', ['-xzf', tarball, '-C', unpacked]);
    const prebuilds = path.join(unpacked, 'package', 'prebuilds', tuple);
    const addon = path.join(prebuilds, fs.readdirSync(prebuilds).find((n) => n.endsWith('.node'))!);
    execFileSync('patchelf', ['--add-needed', 'libtorchfold-absent.so.1', addon]);
    const broken = path.join(dir, `broken-${path.basename(tarball)}`);
    execFileSync('tar', ['-czf', broken, '-C', unpacked, 'package']);

    const app2 = newProject('app-from-source');
    const r = npmInstall(app2, [broken]);
    const log = r.stdout + r.stderr;
    expect(r.status, log).toBe(0);
    expect(log).toContain('torchfold: no prebuilt addon loads on this machine, so it will be built from source');
    expect(log).toContain('libtorchfold-absent.so.1: cannot open shared object file');
    expect(log).toContain(`torchfold: building from source with node-gyp against libtorch ${versions.libtorch}`);
    expect(log).toContain('torchfold: using build/Release/torchfold.node');
    const built = path.join(app2, 'node_modules', 'torchfold', 'build', 'Release', 'torchfold.node');
    const record = JSON.parse(fs.readFileSync(`${built}.json`, 'utf8')) as { libtorch: { version: string } };
    expect(record.libtorch.version).toBe(versions.libtorch);

    fs.writeFileSync(path.join(app2, 'quickstart.cjs'), readmeBlock('quickstart.cjs'));
    expect(ok(run(process.execPath, ['quickstart.cjs'], app2), 'quickstart.cjs in app-from-source'))
      .toMatch(/folded \d+, skipped \d+/);
  }, 900_000);
});
