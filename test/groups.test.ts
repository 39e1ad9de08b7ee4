// fuse({ modules }): exactly the listed conv -> BatchNorm groups fold, and a
// group that is not a foldable consecutive pair is an ERR_FUSE_GROUP error
// naming the group and the reason. The model and its pairs come from
// PyTorch (the tune fixtures' scripted ResNet, pairs found by forward hooks).
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, Tensor } from '../lib';
import { decode, FIXTURES } from './helpers/fixtures';
import { manifestOf, within } from './helpers/subdir';

interface TuneCase { file: string; inputs: unknown[]; pairs: { conv: string; norm: string }[] }
const cases = manifestOf<{ cases: Record<string, TuneCase> }>('tune').cases;
const resnet = cases.tv_resnet10_scripted;
const file = path.join(FIXTURES, 'tune', resnet.file);

describe('fuse({ modules })', () => {
  it('folds exactly the listed groups, bit-identical to a full fuse for those convs', async () => {
    const m = await load(file);
    const groups = [['conv1', 'bn1', 'relu'], ['layer1.0.conv1', 'layer1.0.bn1']];
    const { module, report } = await m.fuse({ modules: groups });
    expect(report.pairs.map((p) => `${p.conv}->${p.norm}`).sort())
      .toEqual(resnet.pairs.map((p) => `${p.conv}->${p.norm}`).sort());
    const folded = report.pairs.filter((p) => p.status === 'folded').map((p) => `${p.conv}->${p.norm}`).sort();
    expect(folded).toEqual(['conv1->bn1', 'layer1.0.conv1->layer1.0.bn1']);
    for (const p of report.pairs.filter((q) => q.status === 'skipped')) expect(p.reason).toContain('not listed in options.modules');
    expect(report.batchNorms.after).toBe(report.batchNorms.before - 2);
    // The listed convs get the same folded parameters as fusing everything; the rest are untouched.
    const all = (await m.fuse()).module.stateDict();
    const state = module.stateDict(), original = m.stateDict();
    // The folded BatchNorms are replaced by empty modules: their parameters and buffers are gone.
    expect(report.replaced).toEqual(['bn1', 'layer1.0.bn1']);
    for (const name of Object.keys(original)) {
      if (name.startsWith('bn1.') || name.startsWith('layer1.0.bn1.')) {
        expect(state[name], name).toBeUndefined();
        continue;
      }
      const listed = name.startsWith('conv1.') || name.startsWith('layer1.0.conv1.');
      const want = listed ? all[name] : original[name];
      expect(Array.from(state[name].toTypedArray() as ArrayLike<number>), name)
        .toEqual(Array.from(want.toTypedArray() as ArrayLike<number>));
    }
    // Outputs stay close to the original's.
    const x = resnet.inputs.map((t) => decode(within('tune', t)));
    const [a, b] = [await m.forward(...x) as Tensor, await module.forward(...x) as Tensor];
    const [va, vb] = [a.toTypedArray() as Float32Array, b.toTypedArray() as Float32Array];
    let worst = 0;
    for (let i = 0; i < va.length; i++) worst = Math.max(worst, Math.abs(va[i] - vb[i]) / (Math.abs(va[i]) + 1e-3));
    expect(worst).toBeLessThan(1e-3);
  });

  const bad: [string, string[][], RegExp][] = [
    ['an activation that does not follow the norm', [['conv1', 'bn1', 'maxpool']], /'maxpool' does not run on the output of 'bn1'/],
    ['a norm that follows another conv', [['conv1', 'layer1.0.bn1']], /'layer1.0.bn1' runs on the output of 'layer1.0.conv1', not of 'conv1'/],
    ['a module that does not exist', [['conv9', 'bn1']], /'conv9' is not a submodule/],
    ['a conv followed by something else', [['conv1', 'relu']], /the output of 'conv1' goes to 'bn1', not to 'relu'/],
    ['a residual add between norm and activation', [['layer1.0.conv2', 'layer1.0.bn2', 'layer1.0.relu']],
      /'layer1.0.relu' does not run on the output of 'layer1.0.bn2'/],
  ];
  it.each(bad)('rejects %s with ERR_FUSE_GROUP naming the group', async (_, groups, why) => {
    const m = await load(file);
    const err = await m.fuse({ modules: groups }).catch((e) => e);
    expect(err.code).toBe('ERR_FUSE_GROUP');
    expect(err.message).toContain(`options.modules[0] ['${groups[0].join("', '")}']`);
    expect(err.message).toMatch(why);
  });

  it('names a listed group that cannot fold, with the analysis reason', async () => {
    // In training mode the BatchNorm uses batch statistics, so the listed pair cannot fold.
    const m = await load(path.join(FIXTURES, 'tune', cases.seq_bias.file));
    m.train();
    const err = await m.fuse({ modules: [['0', '1']] }).catch((e) => e);
    expect(err.code).toBe('ERR_FUSE_GROUP');
    expect(err.message).toMatch(/cannot be folded: .*training mode/);
    m.eval();
    const { report } = await m.fuse({ modules: [['0', '1', '2']] });
    expect(report.folded).toBe(1);
  });

  it('checks the shape of options.modules', async () => {
    const m = await load(file);
    for (const modules of [[], ['conv1', 'bn1'], [['conv1']], [['a', 'b', 'c', 'd']], [['conv1', 3]], 'conv1']) {
      expect(() => m.fuse({ modules } as never), JSON.stringify(modules)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    }
    expect(() => m.fuse({ modules: [['conv1', 'bn1'], ['conv1', 'bn1']] })).toThrow(RangeError);
  });
});
