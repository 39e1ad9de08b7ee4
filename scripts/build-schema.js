#!/usr/bin/env node
'use strict';
// Writes schema/fuse-report.schema.json: the JSON Schema (2020-12) of the
// reports the library returns, generated from the types in lib/report.ts with
// ts-json-schema-generator. Descriptions are the TSDoc comments of those types.
//
//   node scripts/build-schema.js           regenerate the file
//   node scripts/build-schema.js --check   fail (exit 1) if the committed file is stale
//
// One file: its root is FuseReport (what fuse() returns); every type of
// lib/report.ts is under $defs, so InspectReport (inspect()) and HalfReport
// (toHalf()) are `fuse-report.schema.json#/$defs/InspectReport` and
// `#/$defs/HalfReport`, sharing ValidationReport and the rest with it.
//
// The schema describes the report as JSON (JSON.stringify of the object). Two
// things TypeScript's `number` cannot say are added after generation, from the
// REFINE table below: which numbers are integers or have a lower bound, and
// that the validation errors may be null (JSON has no Infinity). A rule that
// names a property the generated schema lacks fails the build, so the table
// cannot silently outlive a rename.
const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..');
const OUT = path.join(ROOT, 'schema', 'fuse-report.schema.json');
const ID = 'https://torchfold.dev/schema/fuse-report@1.json';

const count = { type: 'integer', minimum: 0 };
const ms = { minimum: 0 };
const index = { type: 'integer', minimum: -1 };
const shape = { items: { type: 'integer', minimum: 0 } };
const fuseReport = {
  folded: count,
  skipped: count,
  'batchNorms.before': count,
  'batchNorms.after': count,
  ...Object.fromEntries(['analyze', 'fold', 'rewrite', 'validate', 'benchmark', 'optimize', 'total'].map((k) => [`timings.${k}`, ms])),
};

/** Definition -> dotted property path (through nested object literals) -> keywords to merge. */
const REFINE = {
  FuseReport: fuseReport,
  InspectReport: fuseReport,  // generated flat: it repeats FuseReport's properties
  StepReport: { round: { type: 'integer', minimum: 1 }, changed: count, ms },
  CandidateReport: { buildMs: ms, speedup: { minimum: 0 } },
  OptimizeReport: { iterations: { type: 'integer', minimum: 1 }, warmup: count, threads: { type: 'integer', minimum: 1 },
    'inputs[]': shape },
  ValidationReport: {
    maxAbsError: { type: ['number', 'null'], minimum: 0 },
    maxRelError: { type: ['number', 'null'], minimum: 0 },
    atol: { minimum: 0 }, rtol: { minimum: 0 }, inputs: count,
  },
  LatencyStats: { medianMs: ms, p10Ms: ms, p90Ms: ms },
  BenchmarkReport: { iterations: { type: 'integer', minimum: 1 }, warmup: count, threads: { type: 'integer', minimum: 1 },
    speedup: { minimum: 0 } },
  HalfLayerReport: { params: count },
  HalfReport: { converted: count, paramsConverted: count, bytesSaved: count, callSites: count },
  GraphValueRef: { node: index, output: index, input: index, block: index },
  GraphUse: { node: index, input: count, block: index },
  GraphValue: { shape },
  GraphNode: { index: count, parent: index, block: index },
};

/** TSDoc inline tags read oddly in a schema: `{@link A.b}` and `{@link A.b | text}` become `A.b` / `text`. */
function plainText(text) {
  return text
    .replace(/\s*\{@link(?:code|plain)?\s+([^\s|}]+)\s*(?:\|\s*([^}]*?))?\s*\}\s*/g, (m, target, label) => ` ${label || target} `)
    .replace(/ +([.,;:)])/g, '$1')
    .replace(/ {2,}/g, ' ')
    .trim();
}

function walk(node, fn) {
  if (Array.isArray(node)) { node.forEach((x) => walk(x, fn)); return; }
  if (node && typeof node === 'object') {
    fn(node);
    Object.values(node).forEach((x) => walk(x, fn));
  }
}

function refine(defs) {
  for (const [name, rules] of Object.entries(REFINE)) {
    const def = defs[name];
    if (!def) throw new Error(`build-schema: REFINE names ${name}, which lib/report.ts no longer exports`);
    for (const [where, keywords] of Object.entries(rules)) {
      let node = def;
      for (const part of where.split('.')) {
        const array = part.endsWith('[]');
        node = node.properties?.[array ? part.slice(0, -2) : part];
        if (node && array) node = node.items;
        if (!node) throw new Error(`build-schema: REFINE names ${name}.${where}, which the generated schema lacks`);
      }
      for (const [k, v] of Object.entries(keywords)) {
        node[k] = k === 'items' ? { ...node.items, ...v } : v;
      }
    }
  }
}

/** The schema as the text the committed file holds. */
function render() {
  const { createGenerator } = require('ts-json-schema-generator');
  const generated = createGenerator({
    path: path.join(ROOT, 'lib', 'report.ts'),
    tsconfig: path.join(ROOT, 'tsconfig.json'),
    type: '*',
    expose: 'export',
    jsDoc: 'extended',
    sortProps: false,
    additionalProperties: false,
    skipTypeCheck: true,  // tsc checks lib/; this only reads the types
  }).createSchema('*');
  const defs = JSON.parse(JSON.stringify(generated.definitions).replaceAll('"#/definitions/', '"#/$defs/'));
  for (const required of ['FuseReport', 'InspectReport', 'HalfReport']) {
    if (!defs[required]) throw new Error(`build-schema: lib/report.ts no longer exports ${required}`);
  }
  walk(defs, (n) => { if (typeof n.description === 'string') n.description = plainText(n.description); });
  refine(defs);
  const schema = {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: ID,
    $comment: 'Generated from lib/report.ts by scripts/build-schema.js (npm run schema); do not edit by hand.',
    title: 'torchfold fuse report',
    description: 'The report ScriptModule.fuse() returns, as JSON. InspectReport (inspect()) and HalfReport (toHalf()) ' +
      'are under $defs. Objects allow no other properties; a later report version that adds fields comes with a new schema. ' +
      'See docs/report.md.',
    $ref: '#/$defs/FuseReport',
    $defs: defs,
  };
  return `${JSON.stringify(schema, null, 2)}\n`;
}

/** Regenerates the file; returns its path. */
function write() {
  fs.writeFileSync(OUT, render());
  return OUT;
}

/** Problems with the committed file ([] when it is current). */
function check() {
  const want = render();
  if (!fs.existsSync(OUT)) return [`${path.relative(ROOT, OUT)} is missing: run \`npm run schema\``];
  if (fs.readFileSync(OUT, 'utf8') !== want) {
    return [`${path.relative(ROOT, OUT)} is stale (lib/report.ts changed since it was generated): run \`npm run schema\``];
  }
  return [];
}

module.exports = { render, write, check, OUT };

if (require.main === module) {
  if (process.argv.includes('--check')) {
    const problems = check();
    for (const p of problems) console.error(`build-schema: ${p}`);
    if (problems.length) process.exit(1);
    console.log(`build-schema: ${path.relative(ROOT, OUT)} is current`);
  } else {
    console.log(`build-schema: wrote ${path.relative(ROOT, write())}`);
  }
}
