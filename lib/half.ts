/** Options of ScriptModule.toHalf(). */
import { rangeError, typeError } from './errors';
import { checkInputs, SampleInput } from './fuse';
import { expectKnownKeys, expectOptions } from './validate';

/**
 * Options of {@link ScriptModule.toHalf}. Unknown keys throw a RangeError.
 */
export interface HalfOptions {
  /**
   * The half dtype. CPU builds of libtorch 1.13 have no float16 Linear/Conv
   * kernels, so a float16 result fails when run on the CPU (`ERR_TORCH`); use
   * bfloat16 there.
   *
   * @defaultValue `'float16'`
   */
  dtype?: 'float16' | 'bfloat16';
  /**
   * Convert every Linear/Conv layer with at least this many parameter elements
   * (an integer ≥ 0). Not together with `layers`.
   *
   * @defaultValue `0`: every layer
   */
  minParams?: number;
  /**
   * Convert exactly these module paths instead (a non-empty list; not together
   * with `minParams`). Other layers are skipped as "not listed in layers".
   *
   * @defaultValue `undefined`: every layer with at least `minParams` parameters
   */
  layers?: string[];
  /**
   * Compare the converted module's outputs with this module's; the result is
   * {@link HalfReport.validation}. A failed comparison is only reported.
   *
   * @defaultValue `undefined`: no validation
   */
  validate?: {
    /** The arguments of one `forward` call. */
    inputs: SampleInput[];
    /**
     * Absolute tolerance: an element passes when |after − before| ≤ atol + rtol·|before|.
     *
     * @defaultValue `1e-2`
     */
    atol?: number;
    /**
     * Relative tolerance.
     *
     * @defaultValue `1e-2`
     */
    rtol?: number;
    /**
     * Seed of the values that fill shape inputs (an integer ≥ 0).
     *
     * @defaultValue `0`
     */
    seed?: number;
  };
}

export function checkHalfOptions(options: unknown): HalfOptions {
  const o = expectOptions<HalfOptions>(options, 'options');
  expectKnownKeys(o, ['dtype', 'minParams', 'layers', 'validate'], 'options');
  if (o.dtype !== undefined && o.dtype !== 'float16' && o.dtype !== 'bfloat16') {
    throw rangeError("'float16' or 'bfloat16'", 'options.dtype', o.dtype);
  }
  if (o.minParams !== undefined && (typeof o.minParams !== 'number' || !Number.isSafeInteger(o.minParams) || o.minParams < 0)) {
    throw rangeError('an integer >= 0', 'options.minParams', o.minParams);
  }
  if (o.layers !== undefined) {
    if (!Array.isArray(o.layers) || o.layers.length === 0 || !o.layers.every((l) => typeof l === 'string' && l.length > 0)) {
      throw typeError('a non-empty array of module paths', 'options.layers', o.layers);
    }
    if (o.minParams !== undefined) throw rangeError('either layers or minParams, not both', 'options', o);
  }
  if (o.validate !== undefined) {
    const v = expectOptions<NonNullable<HalfOptions['validate']>>(o.validate, 'options.validate');
    expectKnownKeys(v, ['inputs', 'atol', 'rtol', 'seed'], 'options.validate');
    checkInputs(v.inputs, 'options.validate.inputs');
    if (v.seed !== undefined && (typeof v.seed !== 'number' || !Number.isSafeInteger(v.seed) || v.seed < 0)) {
      throw rangeError('an integer >= 0', 'options.validate.seed', v.seed);
    }
    for (const k of ['atol', 'rtol'] as const) {
      if (v[k] !== undefined && (typeof v[k] !== 'number' || !(v[k] >= 0))) throw rangeError('a number >= 0', `options.validate.${k}`, v[k]);
    }
  }
  return o;
}
