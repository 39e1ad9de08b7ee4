'use strict';
// Opens bad or damaged model files one after another IN THIS PROCESS (no
// isolation), and for each one that loads: forward, fuse, forward of the fused
// module, save. Before each step it prints {"file","stage"} on stdout, and after
// the file {"file","result"}, so a parent that sees this process die knows
// which file and which step killed it (scripts/stress/corpus.js).
//
// Usage: node corpus-child.js LIST.json   (LIST: { dist, files: [...], input: [shape], scratch })
const fs = require('fs');
const path = require('path');

const request = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const tf = require(request.dist);

const say = (o) => fs.writeSync(1, JSON.stringify(o) + '\n');

/** Exact float32 values that /usr/bin/python3 can rebuild without rounding doubts. */
function sampleInput(shape) {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (((i * 37) % 17) - 8) / 8;
  return tf.Tensor.from(data, shape);
}

function codeOf(e) {
  return e instanceof tf.TorchfoldError ? e.code : `${e && e.name}${e && e.code ? ` ${e.code}` : ''}`;
}

async function step(file, stage, result, fn) {
  say({ file, stage });
  try {
    const value = await fn();
    result[stage] = 'ok';
    return value;
  } catch (e) {
    result[stage] = codeOf(e);
    result[`${stage}Message`] = String(e && e.message).slice(0, 300);
    return undefined;
  }
}

async function main() {
  for (const file of request.files) {
    const result = {};
    const m = await step(file, 'load', result, () => tf.load(file, request.verify ? { verify: true } : undefined));
    if (m) {
      const y = await step(file, 'forward', result, () => m.forward(sampleInput(request.input)));
      if (y instanceof tf.Tensor && y.dtype === 'float32' && y.numel <= 4096) result.output = Array.from(y.toTypedArray(), (v) => (Number.isFinite(v) ? v : String(v)));
      const fused = await step(file, 'fuse', result, () => m.fuse());
      if (fused) {
        await step(file, 'fusedForward', result, () => fused.module.forward(sampleInput(request.input)));
        result.folded = fused.report.folded;
        fused.module.dispose();
      }
      await step(file, 'save', result, () => m.save(path.join(request.scratch, 'resaved.pt')));
      m.dispose();
    }
    say({ file, result });
  }
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(3); });
