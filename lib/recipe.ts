/**
 * Recipes: an optimized module saved as its portable form (frozen, folded,
 * maybe channels_last) plus the steps that make it fast again, redone by
 * torchfold when it loads the file (native/core/recipe.h).
 *
 * The run-time steps are those whose result cannot be saved or is not part of
 * a module at all: libtorch's optimize_for_inference (its oneDNN constants
 * cannot be serialized) and the JIT fusers (oneDNN Graph, NNC), which are
 * process-wide switches torchfold holds per module. PyTorch's torch.jit.load
 * reads the same file as the portable form: correct, only slower.
 */
import { native, NativeModule } from './binding';
import { TorchfoldError } from './errors';
import { compareOutputs, materializeAsync, Runner } from './fuse';
import { ValidationReport } from './report';
import { Tensor } from './tensor';
import { fromNative, toNative } from './values';

/** The extra file (under `extra/` in the archive) that holds the recipe. */
export const RECIPE_FILE = 'torchfold/recipe.json';
const FORMAT = 'torchfold-recipe/1';

/** The portable part: what the saved file holds. */
export interface PortableSteps { freeze: boolean; channelsLast: boolean }
/** The run-time part: redone in each process that loads the file. */
export interface RunTimeSteps { optimizeForInference: boolean; llga: boolean; nnc: boolean }

/** What torchfold stores beside a saved optimized module. */
export interface RecipeSpec {
  format: typeof FORMAT;
  /** The optimize candidate it makes, e.g. 'frozen+channels_last+llga'. */
  candidate: string;
  portable: PortableSteps;
  runTime: RunTimeSteps;
  /** The sample the re-applied module is checked on against the portable form: shapes of seeded normal float32 inputs. */
  check: { inputs: number[][]; seed: number; atol: number; rtol: number } | null;
  madeWith: { torchfold: string; libtorch: string };
}

/** What happened to a file's recipe when torchfold loaded it ({@link ScriptModule.recipe}). */
export interface RecipeReport {
  /** The optimize candidate the recipe makes, e.g. 'frozen+llga'. */
  candidate: string;
  /** The run-time steps redone, e.g. ['optimize_for_inference'] or ['llga']; [] when there are none. */
  steps: string[];
  /** Whether the module returned is the re-applied one (false: the portable form, see `reason`). */
  applied: boolean;
  /** Why the portable form was kept. */
  reason?: string;
  /** The re-applied module against the portable form on the stored sample (run twice: the fusers compile on the second call). */
  validation?: ValidationReport;
  /** Milliseconds spent re-applying the steps and checking them (the load's extra cost). */
  applyMs: number;
}

/** The run-time steps by name, for reports. */
export function stepNames(r: RunTimeSteps): string[] {
  return [r.optimizeForInference && 'optimize_for_inference', r.llga && 'llga', r.nnc && 'nnc'].filter(Boolean) as string[];
}

export const NO_RUN_TIME: RunTimeSteps = { optimizeForInference: false, llga: false, nnc: false };

export function hasRunTimeSteps(r: RunTimeSteps): boolean { return stepNames(r).length > 0; }

/** The stored check sample for these inputs, or null when one is not a float32 tensor or shape. */
export function checkSample(inputs: Tensor[], seed: number, atol: number, rtol: number): RecipeSpec['check'] {
  if (inputs.some((t) => t.dtype !== 'float32')) return null;
  return { inputs: inputs.map((t) => [...t.shape]), seed, atol, rtol };
}

function forwardOn(handle: NativeModule): Runner {
  const tensorCtor = native().NativeTensor;
  return async (xs) => fromNative(await handle.run('forward', xs.map((x, i) => toNative(x, `inputs[${i}]`))), tensorCtor);
}

/** Parses a stored recipe; throws ERR_UNSUPPORTED for one this torchfold does not know. */
export function parseRecipe(text: string): RecipeSpec {
  let spec: RecipeSpec;
  try {
    spec = JSON.parse(text) as RecipeSpec;
  } catch (e) {
    throw new TorchfoldError(`The file's ${RECIPE_FILE} is not JSON: ${(e as Error).message}`, 'ERR_FILE_CORRUPT');
  }
  if (spec?.format !== FORMAT || typeof spec.runTime !== 'object' || spec.runTime === null) {
    throw new TorchfoldError(`The file's ${RECIPE_FILE} has format ${JSON.stringify(spec?.format)}; this torchfold reads ${FORMAT}`,
      'ERR_UNSUPPORTED');
  }
  return spec;
}

/**
 * Re-applies a recipe's run-time steps to a loaded portable form and checks
 * the result against it on the stored sample (twice). Returns the handle to
 * use (the new one, or the portable one with a reason) and the report. Never
 * throws for a recipe that cannot be applied here: the portable form is
 * correct, so it is kept and the report says why.
 */
export async function applyRecipe(portable: NativeModule, spec: RecipeSpec):
  Promise<{ handle: NativeModule; report: RecipeReport }> {
  const t0 = performance.now();
  const report: RecipeReport = { candidate: spec.candidate, steps: stepNames(spec.runTime), applied: false, applyMs: 0 };
  const done = (handle: NativeModule) => { report.applyMs = performance.now() - t0; return { handle, report }; };
  if (!hasRunTimeSteps(spec.runTime)) { report.applied = true; return done(portable); }
  if (portable.device() !== 'cpu') { report.reason = 'the run-time steps are for the CPU; the module was loaded elsewhere'; return done(portable); }
  let applied: NativeModule;
  try {
    applied = (await portable.applyRunTime(spec.runTime)).module;
  } catch (e) {
    report.reason = `could not be re-applied: ${(e as Error).message}`;
    return done(portable);
  }
  if (!spec.check) {
    report.reason = 'the file stores no check sample; the portable form is kept';
    applied.dispose();
    return done(portable);
  }
  try {
    const inputs = await materializeAsync(spec.check.inputs, spec.check.seed);
    const { atol, rtol } = spec.check;
    const first = await compareOutputs(forwardOn(portable), forwardOn(applied), inputs, atol, rtol);
    const second = await compareOutputs(forwardOn(portable), forwardOn(applied), inputs, atol, rtol);
    report.validation = second.maxAbsError >= first.maxAbsError ? second : first;
    report.validation.passed = first.passed && second.passed;
  } catch (e) {
    report.reason = `failed on the stored sample: ${(e as Error).message}`;
  }
  if (!report.reason && !report.validation!.passed) {
    report.reason = `outputs differ from the portable form's (max abs error ${report.validation!.maxAbsError.toExponential(3)})`;
  }
  if (report.reason) {
    applied.dispose();
    return done(portable);
  }
  report.applied = true;
  return done(applied);
}
