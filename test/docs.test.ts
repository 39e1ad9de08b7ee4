// The API reference and the report schema: docs/api and schema/fuse-report.schema.json
// are what scripts/docs.js generates from lib/ now (so they cannot go stale), and
// real reports, made by running fuse(), inspect() and toHalf() on fixture models,
// validate against the schema, while broken ones do not.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import Ajv, { ValidateFunction } from 'ajv/dist/2020';
import { afterAll, describe, expect, it } from 'vitest';
import { FuseOptions, FuseReport, HalfReport, InspectReport, load, ScriptModule } from '../lib';
import { FIXTURES, model, ROOT } from './helpers/fixtures';

const SCHEMA = JSON.parse(fs.readFileSync(path.join(ROOT, 'schema', 'fuse-report.schema.json'), 'utf8'));
const CLI_SCHEMA = JSON.parse(fs.readFileSync(path.join(ROOT, 'schema', 'optimize-report.schema.json'), 'utf8'));

// Both schemas in one strict instance: their $ids must not clash, and the CLI's
// own description of the embedded FuseReport must accept the same reports.
const ajv = new Ajv({ strict: true, allErrors: true });
ajv.addSchema(SCHEMA);
ajv.addSchema(CLI_SCHEMA);
const validators = {
  fuse: ajv.getSchema(SCHEMA.$id)!,
  inspect: ajv.getSchema(`${SCHEMA.$id}#/$defs/InspectReport`)!,
  half: ajv.getSchema(`${SCHEMA.$id}#/$defs/HalfReport`)!,
  cliFuse: ajv.getSchema(`${CLI_SCHEMA.$id}#/$defs/FuseReport`)!,
};

/** The report as a consumer of the JSON sees it. */
const asJson = <T>(report: T): T => JSON.parse(JSON.stringify(report)) as T;

function expectValid(validate: ValidateFunction, report: unknown, what: string): void {
  const ok = validate(asJson(report));
  expect(ok ? [] : validate.errors, `${what}: ${ajv.errorsText(validate.errors)}`).toEqual([]);
}

const opened: ScriptModule[] = [];
afterAll(async () => { for (const m of opened) await m.dispose(); });

async function open(file: string): Promise<ScriptModule> {
  const m = await load(file);
  opened.push(m);
  return m;
}

async function fuse(file: string, options?: FuseOptions): Promise<FuseReport> {
  const { module, report } = await (await open(file)).fuse(options);
  opened.push(module);
  return report;
}

const fuseCase = (name: string) => path.join(FIXTURES, 'fuse', `${name}.pt`);
const transformCase = (name: string) => path.join(FIXTURES, 'transform', `${name}.pt`);

describe('API reference and report schema', () => {
  it('docs/api and schema/fuse-report.schema.json are current (scripts/docs.js --check)', () => {
    const r = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'docs.js'), '--check'], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/are current; \d+ optional properties of \d+ \*Options interfaces have a @defaultValue/);
  });

  it('both schemas compile in one strict Ajv instance', () => {
    for (const [name, v] of Object.entries(validators)) expect(v, name).toBeTypeOf('function');
    expect(SCHEMA.$id).not.toBe(CLI_SCHEMA.$id);
  });

  describe('real reports validate', () => {
    const reports: { what: string; report: FuseReport }[] = [];
    afterAll(() => {
      // Every report also fits the CLI schema's FuseReport (it embeds one per input).
      for (const { what, report } of reports) expectValid(validators.cliFuse, report, `${what} (optimize-report schema)`);
    });
    const check = (what: string, report: FuseReport) => {
      reports.push({ what, report });
      expectValid(validators.fuse, report, what);
    };

    it('fold with validate, benchmark, constants and optimize', async () => {
      const report = await fuse(model('convbn_traced').path, {
        constants: true,
        validate: { inputs: [[2, 3, 16, 16]] },
        benchmark: { inputs: [[2, 3, 16, 16]], iterations: 2, warmup: 1 },
        optimize: { iterations: 2, warmup: 0 },
      });
      expect(report.validation?.passed).toBe(true);
      expect(report.benchmark?.iterations).toBe(2);
      expect(report.optimize?.candidates.length).toBeGreaterThanOrEqual(3);
      expect(report.steps.map((s) => s.name)).toContain('constants');
      check('fold+validate+benchmark+constants+optimize', report);
    });

    it('tune mode', async () => {
      const report = await fuse(model('convbn_scripted').path, { mode: 'tune' });
      expect(report.mode).toBe('tune');
      expect(report.steps.some((s) => s.name === 'tune')).toBe(true);
      check('tune', report);
    });

    it('skipped pairs, with their reasons', async () => {
      const training = await fuse(model('trainable').path);
      expect(training.skipped).toBeGreaterThan(0);
      check('training mode', training);
      for (const name of ['skip_used_twice', 'skip_training', 'skip_nan_var', 'skip_shared_class', 'skip_negative_var']) {
        const report = await fuse(fuseCase(name));
        expect(report.pairs.some((p) => p.status === 'skipped' && p.reason), name).toBe(true);
        check(name, report);
      }
      // A fold behind a rank guard (a Linear whose input may be 3-D).
      const guarded = await fuse(fuseCase('linear_3d_input'));
      expect(guarded.pairs.some((p) => p.status === 'folded' && p.rankGuard), 'linear_3d_input').toBe(true);
      check('linear_3d_input', guarded);
      // A fold as a copy of the conv for one call site (its weight is also read elsewhere).
      const copied = await fuse(fuseCase('site_copy_called_twice'));
      expect(copied.pairs.some((p) => p.status === 'folded' && p.siteCopy), 'site_copy_called_twice').toBe(true);
      check('site_copy_called_twice', copied);
    });

    it('pairs left unfolded by validation (zero tolerance)', async () => {
      const report = await fuse(model('convbn_scripted').path, { validate: { inputs: [[2, 3, 16, 16]], atol: 0, rtol: 0 } });
      expect(report.validation).toBeDefined();
      check('validate onFailure unfold', report);
    });

    it('constant absorption, folded and skipped', async () => {
      const chain = await fuse(transformCase('const_chain_mul_add_bn'), { constants: true });
      expect(chain.absorbed.some((a) => a.status === 'folded')).toBe(true);
      check('constants chain', chain);
      const skipped = await fuse(transformCase('const_skip_dtype'), { constants: true });
      expect(skipped.absorbed.some((a) => a.status === 'skipped' && a.reason)).toBe(true);
      check('constants skipped', skipped);
    });

    it('inspect(), with the graph and shapes', async () => {
      const report: InspectReport = await (await open(model('resnet18_traced').path)).inspect({ inputShapes: [[1, 3, 64, 64]] });
      expect(report.graph.nodes.length).toBeGreaterThan(0);
      expect(report.dot).toContain('digraph');
      expectValid(validators.inspect, report, 'inspect resnet18_traced');
      const constants: InspectReport = await (await open(model('multi_method').path)).inspect({ constants: true, inlined: false });
      expectValid(validators.inspect, constants, 'inspect multi_method');
    });

    it('toHalf(), converted and skipped layers, with validation', async () => {
      const m = await open(transformCase('half_mlp'));
      const { module, report } = await m.toHalf({ dtype: 'bfloat16', minParams: 100_000, validate: { inputs: [[4, 64]] } });
      opened.push(module);
      expect(report.converted).toBeGreaterThan(0);
      expect(report.layers.some((l) => l.status === 'skipped' && l.reason)).toBe(true);
      expect(report.validation).toBeDefined();
      expectValid(validators.half, report, 'toHalf');
    });
  });

  describe('the schema constrains', () => {
    let base: FuseReport;
    const variant = (change: (r: FuseReport & Record<string, unknown>) => void) => {
      const r = asJson(base) as FuseReport & Record<string, unknown>;
      change(r);
      return r;
    };

    it('rejects broken fuse reports', async () => {
      base = await fuse(model('trainable').path, { validate: { inputs: [[4, 3, 8, 8]] } });
      expect(validators.fuse(asJson(base))).toBe(true);
      const broken: [string, FuseReport][] = [
        ['a required field missing', variant((r) => { delete (r as Partial<FuseReport>).folded; })],
        ['a count of the wrong type', variant((r) => { (r as Record<string, unknown>).skipped = '2'; })],
        ['a count that is not an integer', variant((r) => { r.folded = 1.5; })],
        ['a negative time', variant((r) => { r.timings.total = -1; })],
        ['an unknown status', variant((r) => { (r.pairs[0] as { status: string }).status = 'maybe'; })],
        ['an unknown mode', variant((r) => { (r as { mode: string }).mode = 'fuse'; })],
        ['an unknown field', variant((r) => { r.extra = true; })],
        ['an unknown field in a pair', variant((r) => { (r.pairs[0] as unknown as Record<string, unknown>).note = 'x'; })],
        ['a validation without passed', variant((r) => { delete (r.validation as Partial<NonNullable<FuseReport['validation']>>).passed; })],
      ];
      for (const [what, report] of broken) expect(validators.fuse(report), what).toBe(false);
      // A NaN output makes maxAbsError Infinity, which JSON writes as null: still a valid report.
      const nan = variant((r) => { r.validation!.maxAbsError = Infinity; r.validation!.passed = false; });
      expect(validators.fuse(asJson(nan)), ajv.errorsText(validators.fuse.errors)).toBe(true);
    });

    it('tells the three reports apart', async () => {
      const half = { dtype: 'bfloat16', layers: [], converted: 0, paramsConverted: 0, bytesSaved: 0, callSites: 0 } satisfies HalfReport;
      expect(validators.half(half)).toBe(true);
      expect(validators.half({ ...half, dtype: 'float32' })).toBe(false);
      expect(validators.fuse(half)).toBe(false);
      expect(validators.inspect(asJson(base)), 'a fuse report lacks graph and dot').toBe(false);
    });
  });
});
