// Models saved by PyTorch 2.14 (test/fixtures/pytorch2, scripts/make_pytorch2_fixtures.py)
// through the build under test: scripts/run-tests.js runs this file against the default
// libtorch 2.x build and against Debian's 1.13. Each model loads, runs with PyTorch's
// result, fuses every BatchNorm PyTorch counts, and the fused file loads back in PyTorch
// 1.13 and 2.x. A model that calls an operator libtorch 1.13 lacks fails there with an
// error naming the operator and the real fix.
import * as fs from 'fs';
import * as path from 'path';
import { afterAll, describe, expect, it } from 'vitest';
import { load, TorchfoldError, versions } from '../lib';
import { checkInPyTorch, expectMatches, generation, inputsOf, pytorch2Fixtures, tmpDir } from './helpers/fixtures';

const dir = tmpDir('pytorch2');
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const fixtures = pytorch2Fixtures();
const gen = generation(versions.libtorch);
const isHalf = (name: string) => fixtures.models[name].cases[0].inputs.some((t) => JSON.stringify(t).includes('"float16"'));

describe(`models saved by PyTorch ${fixtures.torch}, on libtorch ${versions.libtorch}`, () => {
  it('the fixtures were made by PyTorch 2.x and include torchvision nets and attention blocks', () => {
    expect(fixtures.torch).toMatch(/^2\./);
    const names = Object.keys(fixtures.models);
    expect(names).toEqual(expect.arrayContaining(['resnet18_scripted', 'mobilenet_v2_traced', 'efficientnet_b0_scripted',
      'transformer_encoder_scripted', 'conv_attention_scripted']));
  });

  for (const [name, f] of Object.entries(fixtures.models)) {
    if (f.needsOperator && gen === '1.13') {
      it(`${name}: libtorch 1.13 refuses it with ERR_UNSUPPORTED naming ${f.needsOperator} and a newer libtorch as the fix`, async () => {
        const e = await load(f.path).then(() => null, (err: unknown) => err);
        expect(e).toBeInstanceOf(TorchfoldError);
        const err = e as TorchfoldError;
        expect(err.code).toBe('ERR_UNSUPPORTED');
        expect(err.message).toContain(`calls the operator ${f.needsOperator}`);
        expect(err.message).toMatch(/which this libtorch \(1\.13[^)]*\) does not have: the model was saved by a newer PyTorch\. Use a newer libtorch/);
        expect(err.message).not.toContain('loadLibrary');
      });
      continue;
    }
    if (isHalf(name) && gen === '1.13') {
      it(`${name}: loads; running it fails cleanly (libtorch 1.13 has no float16 convolution on the CPU)`, async () => {
        const m = await load(f.path);
        const e = await m.forward(...inputsOf(f.cases[0])).then(() => null, (err: unknown) => err);
        expect(e).toBeInstanceOf(TorchfoldError);
        expect((e as TorchfoldError).code).toBe('ERR_TORCH');
        expect((e as TorchfoldError).message).toMatch(/Half/);
      });
      continue;
    }

    const foldable = f.foldable ?? f.batchNorms!;
    it(`${name}: runs with PyTorch's result; fuse folds the ${foldable} of ${f.batchNorms} BatchNorms that follow a conv (validated) and still matches`, async () => {
      const m = await load(f.path);
      for (const c of f.cases) expectMatches(await m.run(c.method, ...inputsOf(c)), c.output, c.atol ?? 1e-5);
      const c0 = f.cases[0];
      const tolerance = isHalf(name) ? { atol: 1e-2, rtol: 1e-2 } : {};
      const { module, report } = await m.fuse({ validate: { inputs: inputsOf(c0) as never, onFailure: 'throw', ...tolerance } });
      expect(report.folded).toBe(foldable);
      expect(report.batchNorms).toEqual({ before: f.batchNorms, after: f.batchNorms! - foldable });
      // The rest follow no conv (DenseNet's norm1 after torch.cat): each is unpaired, with its reason.
      expect(report.unpaired.length).toBe(f.batchNorms! - foldable);
      expect(report.validation?.passed).toBe(true);
      // Validation compares values: a float16 model's error is in float16's units, not its bits.
      expect(report.validation?.maxAbsError).toBeLessThanOrEqual(isHalf(name) ? 2e-2 : 1e-3);
      for (const c of f.cases) {
        expectMatches(await module.run(c.method, ...inputsOf(c)), c.output, isHalf(name) ? 2e-2 : Math.max(c.atol ?? 1e-5, 2e-5));
      }
      const file = path.join(dir, `${name}.pt`);
      await module.save(file);
      // The fused file loads and runs in PyTorch 2.x, and in 1.13 unless the model needs a newer one.
      const py2 = checkInPyTorch(file, name, { pytorch: '2.x', manifest: fixtures.manifest });
      expect(py2.error).toBeUndefined();
      expect(py2.ok).toBe(true);
      if (!f.needsOperator && !isHalf(name)) {
        const py1 = checkInPyTorch(file, name, { pytorch: '1.13', manifest: fixtures.manifest });
        expect(py1.error).toBeUndefined();
        expect(py1.ok).toBe(true);
      }
    });
  }
});
