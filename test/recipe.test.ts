// Recipes (lib/recipe.ts): an optimized module is saved as its portable form
// (frozen, folded) plus the steps a save cannot hold (optimize_for_inference,
// oneDNN Graph fusion); load() redoes them, checks the result against the
// portable form on the stored sample, and keeps it only if it matches. PyTorch
// loads the same file as the portable form. Runs on both libtorch builds.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, readExtraFiles, ScriptModule, versions } from '../lib';
import { nativeHandle, withRecipe } from '../lib/module';
import { native } from '../lib/binding';
import { RECIPE_FILE, RecipeSpec } from '../lib/recipe';
import { checkInPyTorch, expectMatches, generation, inputsOf, model, ROOT, tmpDir } from './helpers/fixtures';

const out = tmpDir('recipe');
const gen = generation(versions.libtorch);
const llgaMissing = native().fusers().llga;
const fx = model('resnet18_traced');
const c = fx.cases[0];

function spec(candidate: string, runTime: Partial<RecipeSpec['runTime']>, check: RecipeSpec['check']): RecipeSpec {
  return { format: 'torchfold-recipe/1', candidate, portable: { freeze: true, channelsLast: false },
    runTime: { optimizeForInference: false, llga: false, nnc: false, ...runTime }, check,
    madeWith: { torchfold: versions.torchfold, libtorch: versions.libtorch } };
}

async function frozenOf(file: string): Promise<ScriptModule> {
  const m = await load(file);
  const v = await nativeHandle(m).portable({ freeze: true, channelsLast: false });
  await m.dispose();
  return new ScriptModule(v.module);
}

const check = { inputs: [[1, 3, 224, 224]], seed: 0, atol: 1e-4, rtol: 1e-3 };

describe('recipes', () => {
  it('optimize_for_inference: saved as the portable form + recipe; PyTorch loads it, torchfold redoes the step', async () => {
    const portable = await frozenOf(fx.path);
    const made = await withRecipe(portable, spec('frozen+optimized', { optimizeForInference: true }, check));
    const file = path.join(out, 'ofi.pt');
    await made.save(file);
    const stored = JSON.parse((await readExtraFiles(file, [RECIPE_FILE]))[RECIPE_FILE]);
    expect(stored.runTime).toEqual({ optimizeForInference: true, llga: false, nnc: false });
    expect(stored.check).toEqual(check);
    // PyTorch reads the file as the frozen, folded module and reproduces the model.
    const py = checkInPyTorch(file, 'resnet18_traced', { pytorch: gen });
    expect(py.error).toBeUndefined();
    expect(py.ok).toBe(true);
    // torchfold redoes optimize_for_inference: its oneDNN ops are back in the graph.
    const back = await load(file);
    const r = back.recipe!;
    expect(r).toMatchObject({ candidate: 'frozen+optimized', steps: ['optimize_for_inference'], applied: true });
    expect(r.validation!.passed).toBe(true);
    expect(r.applyMs).toBeGreaterThan(0);
    expect(back.graph('forward')).toMatch(/prepacked|mkldnn/);
    const plain = await load(file, { recipe: false });
    expect(plain.recipe).toBeUndefined();
    expect(plain.graph('forward')).not.toMatch(/prepacked::|to_mkldnn/);
    const y = await back.forward(...inputsOf(c));
    expectMatches(y, c.output, 1e-3);
    // Saved again, it keeps its recipe.
    const again = path.join(out, 'ofi-again.pt');
    await back.save(again);
    expect(JSON.parse((await readExtraFiles(again, [RECIPE_FILE]))[RECIPE_FILE])).toEqual(stored);
    // The CLI optimizes the file's own portable module (optimize_for_inference's constants could not be saved again).
    const cliOut = path.join(out, 'ofi-cli.pt');
    const cli = spawnSync(process.execPath, [path.join(ROOT, 'dist', 'cli', 'main.js'), 'optimize', file, '-o', cliOut], { encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    const reOptimized = await load(cliOut);
    expectMatches(await reOptimized.forward(...inputsOf(c)), c.output, 1e-3);
    await reOptimized.dispose();
    for (const m of [made, back, plain]) await m.dispose();
    expect(portable.disposed).toBe(true);
  }, 120_000);

  it.skipIf(Boolean(llgaMissing))(`oneDNN Graph fusion: re-applied at load, only on that module${llgaMissing ? ` (skipped: ${llgaMissing})` : ''}`, async () => {
    const portable = await frozenOf(fx.path);
    const made = await withRecipe(portable, spec('frozen+llga', { llga: true }, check));
    expect(nativeHandle(made).jitSwitches()).toBe('llga');
    const file = path.join(out, 'llga.pt');
    await made.save(file);
    const back = await load(file);
    expect(back.recipe).toMatchObject({ steps: ['llga'], applied: true });
    expect(nativeHandle(back).jitSwitches()).toBe('llga');
    // A clone, and every other module, runs without the switch.
    const clone = await back.clone();
    expect(nativeHandle(clone).jitSwitches()).toBe('');
    // Fused and plain modules side by side on two compute threads: both right.
    const x = inputsOf(c);
    const ys = await Promise.all([back, clone, back, clone].map((m) => m.forward(...x)));
    for (const y of ys) expectMatches(y, c.output, 1e-3);
    for (const m of [made, back, clone]) await m.dispose();
  }, 120_000);

  it.skipIf(!llgaMissing)('a recipe this libtorch cannot apply keeps the portable form and says why (libtorch 1.13)', async () => {
    const portable = await frozenOf(fx.path);
    const file = path.join(out, 'llga-on-113.pt');
    await nativeHandle(portable).save(file, { [RECIPE_FILE]: JSON.stringify(spec('frozen+llga', { llga: true }, check)) });
    const back = await load(file);
    expect(back.recipe).toMatchObject({ applied: false, steps: ['llga'] });
    expect(back.recipe!.reason).toMatch(/oneDNN Graph fusion is not available/);
    const y = await back.forward(...inputsOf(c));
    expectMatches(y, c.output, 1e-3);
    await back.dispose();
    await portable.dispose();
  }, 60_000);

  it('a check that fails keeps the portable form; a broken or unknown recipe rejects unless recipe: false', async () => {
    const portable = await frozenOf(fx.path);
    const h = nativeHandle(portable);
    const never = { ...check, atol: -1, rtol: 0 };  // no output can pass: the re-applied module is refused
    const refused = path.join(out, 'refused.pt');
    await h.save(refused, { [RECIPE_FILE]: JSON.stringify(spec('frozen+optimized', { optimizeForInference: true }, never)) });
    const back = await load(refused);
    expect(back.recipe).toMatchObject({ applied: false });
    expect(back.recipe!.reason).toMatch(/outputs differ from the portable form's/);
    expect(back.graph('forward')).not.toMatch(/prepacked::/);
    const broken = path.join(out, 'broken.pt');
    await h.save(broken, { [RECIPE_FILE]: '{ not json' });
    await expect(load(broken)).rejects.toMatchObject({ code: 'ERR_FILE_CORRUPT', message: expect.stringContaining(RECIPE_FILE) });
    const future = path.join(out, 'future.pt');
    await h.save(future, { [RECIPE_FILE]: JSON.stringify({ format: 'torchfold-recipe/9' }) });
    await expect(load(future)).rejects.toMatchObject({ code: 'ERR_UNSUPPORTED', message: expect.stringContaining('torchfold-recipe/1') });
    const plain = await load(future, { recipe: false });
    expect(plain.methods).toContain('forward');
    expect(() => load(future, { recipe: 'yes' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => portable.save(path.join(out, 'x.pt'), { extraFiles: { [RECIPE_FILE]: '{}' } })).toThrow(/torchfold's own/);
    for (const m of [back, plain, portable]) await m.dispose();
    fs.rmSync(out, { recursive: true, force: true });
  }, 120_000);
});
