/**
 * A valid model never makes fuse() reject: every TorchScript model in every
 * fixture set (made by real PyTorch 1.13 and 2.14) fuses, and every
 * BatchNorm that runs is either in a pair or unpaired with a reason. A pair
 * may stay unfolded, with its reason; a fuse that throws is a bug.
 */
import * as fs from 'fs';
import * as path from 'path';
import { describe, expect, it } from 'vitest';
import { load, TorchfoldError, versions } from '../lib';
import { FIXTURES, fixtures, generation, pytorch2Fixtures } from './helpers/fixtures';

interface Entry { file: string; skip?: string }

/** Every model file of the fixture sets, with a reason where this libtorch cannot load it by design. */
function allModels(): Record<string, Entry> {
  const out: Record<string, Entry> = {};
  const main = fixtures();
  for (const [name, m] of Object.entries(main.models)) {
    // ops_nms needs torchvision's operator library loaded first (test/oplib.test.ts does that).
    out[`main/${name}`] = { file: path.join(FIXTURES, m.file), skip: name === 'ops_nms' ? 'needs torchvision\'s operator library' : undefined };
  }
  for (const set of ['fuse', 'transform', 'tune']) {
    const dir = path.join(FIXTURES, set);
    for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.pt')).sort()) out[`${set}/${f}`] = { file: path.join(dir, f) };
  }
  for (const [name, m] of Object.entries(pytorch2Fixtures().models)) {
    const skip = m.needsOperator && generation(versions.libtorch) === '1.13' ? `libtorch 1.13 has no ${m.needsOperator}` : undefined;
    out[`pytorch2/${name}`] = { file: m.path, skip };
  }
  return out;
}

const models = allModels();

describe('fuse() never rejects a valid model', () => {
  it('covers every fixture set', () => {
    expect(Object.keys(models).length).toBeGreaterThan(150);
    for (const set of ['main/', 'fuse/', 'transform/', 'tune/', 'pytorch2/']) {
      expect(Object.keys(models).some((k) => k.startsWith(set)), set).toBe(true);
    }
  });

  for (const [name, e] of Object.entries(models)) {
    it.skipIf(Boolean(e.skip))(`${name}${e.skip ? ` (skipped: ${e.skip})` : ''}`, async () => {
      const m = await load(e.file);
      try {
        let report;
        try {
          ({ report } = await m.fuse({ treatTrainingAsEval: m.training }));
        } catch (err) {
          throw new Error(`${name}: fuse rejected with ${(err as TorchfoldError).code}: ${(err as Error).message}`);
        }
        for (const p of report.pairs) if (p.status === 'skipped') expect(p.reason, `${name} ${p.conv}->${p.norm}`).toBeTruthy();
        for (const u of report.unpaired) expect(u.reason, `${name} ${u.norm}`).toMatch(/^its input (comes from|is)/);
        // Every normalization counted is in a pair or unpaired.
        const paired = new Set(report.pairs.map((p) => `${p.norm}|${p.normKind}`));
        expect(paired.size + report.unpaired.length, name).toBeGreaterThanOrEqual(report.batchNorms.before);
      } finally {
        await m.dispose();
      }
    });
  }
});
