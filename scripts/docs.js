#!/usr/bin/env node
'use strict';
// The API reference (docs/api/, markdown made by TypeDoc from the TSDoc in
// lib/) and the report schema (schema/fuse-report.schema.json, see
// build-schema.js).
//
//   node scripts/docs.js           regenerate docs/api and the schema
//   node scripts/docs.js --check   regenerate into a temporary folder and fail
//                                  (exit 1) if the committed files differ
//
// Both modes fail on any TypeDoc warning (typedoc.json: an undocumented export,
// a broken {@link}, a type used but not exported), on an optional property of
// an exported *Options interface without a @defaultValue, and on an ErrorCode
// missing from the table in its comment. They read TypeDoc's JSON model of
// the API for that, so nested option objects are covered too.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const schema = require('./build-schema');

const ROOT = path.resolve(__dirname, '..');
const DOCS = path.join(ROOT, 'docs', 'api');
const TYPEDOC = path.join(ROOT, 'node_modules', 'typedoc', 'bin', 'typedoc');

/** Runs TypeDoc with typedoc.json: markdown into `out`, the JSON model into `json`. */
function typedoc(out, json) {
  const r = spawnSync(process.execPath, [TYPEDOC, '--options', path.join(ROOT, 'typedoc.json'), '--out', out, '--json', json], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`.replace(/\x1b\[[0-9;]*m/g, '');  // eslint-disable-line no-control-regex
  const warnings = output.split('\n').filter((l) => /^\[(warning|error)\]/.test(l));
  if (r.status !== 0 || warnings.length) {
    return [`typedoc failed (exit ${r.status ?? r.signal}):`, ...(warnings.length ? warnings : [output.trim() || String(r.error)])];
  }
  return [];
}

const KIND = { Interface: 256, Property: 1024 };

function hasTag(reflection, tag) {
  return (reflection.comment?.blockTags ?? []).some((t) => t.tag === tag);
}

/** The properties of object types inside `type` (a literal, or one inside a union or an array). */
function nestedProperties(type) {
  if (!type) return [];
  if (type.type === 'reflection') return type.declaration?.children ?? [];
  if (type.type === 'union' || type.type === 'intersection') return type.types.flatMap(nestedProperties);
  if (type.type === 'array') return nestedProperties(type.elementType);
  return [];
}

/** Every optional property of every exported *Options interface, nested ones included, needs a @defaultValue. */
function checkDefaults(project) {
  const problems = [];
  let options = 0, checked = 0;
  const visit = (prop, where) => {
    if (prop.kind !== KIND.Property) return;
    const name = `${where}.${prop.name}`;
    if (prop.flags?.isOptional) {
      checked++;
      if (!hasTag(prop, '@defaultValue')) problems.push(`${name} is optional but its comment has no @defaultValue`);
    }
    for (const child of nestedProperties(prop.type)) visit(child, name);
  };
  for (const r of project.children ?? []) {
    if (r.kind !== KIND.Interface || !r.name.endsWith('Options')) continue;
    options++;
    for (const prop of r.children ?? []) visit(prop, r.name);
  }
  if (options === 0) problems.push('no exported *Options interface found: is the TypeDoc JSON model what this script expects?');
  return { problems, options, checked };
}

/** Every member of the ErrorCode union is described in the table of its comment. */
function checkErrorCodes(project) {
  const alias = (project.children ?? []).find((r) => r.name === 'ErrorCode');
  if (!alias) return ['ErrorCode is not exported'];
  const codes = (alias.type?.types ?? []).map((t) => t.value);
  const text = (alias.comment?.summary ?? []).map((p) => p.text).join('');
  return codes.filter((c) => !text.includes(`\`${c}\` |`)).map((c) => `ErrorCode: ${c} is missing from the table in its comment`);
}

function listFiles(dir, base = dir) {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    return e.isDirectory() ? listFiles(full, base) : [path.relative(base, full)];
  }).sort();
}

/** Differences between the committed docs/api and a fresh build. */
function compareTrees(committed, fresh) {
  const a = new Set(listFiles(committed)), b = new Set(listFiles(fresh));
  const problems = [];
  for (const f of b) if (!a.has(f)) problems.push(`docs/api/${f} is missing`);
  for (const f of a) if (!b.has(f)) problems.push(`docs/api/${f} is no longer generated`);
  for (const f of b) {
    if (!a.has(f)) continue;
    const x = fs.readFileSync(path.join(committed, f), 'utf8').split('\n');
    const y = fs.readFileSync(path.join(fresh, f), 'utf8').split('\n');
    const line = x.findIndex((l, i) => l !== y[i]);
    if (line >= 0 || x.length !== y.length) {
      const at = line >= 0 ? line : Math.min(x.length, y.length);
      problems.push(`docs/api/${f} differs at line ${at + 1}: committed ${JSON.stringify(x[at] ?? '<end>')}, ` +
        `generated ${JSON.stringify(y[at] ?? '<end>')}`);
    }
  }
  return problems;
}

function main() {
  const check = process.argv.includes('--check');
  const started = Date.now();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'torchfold-docs-'));
  try {
    const out = check ? path.join(tmp, 'api') : DOCS;
    const json = path.join(tmp, 'api.json');
    const problems = typedoc(out, json);
    let summary = '';
    if (problems.length === 0) {
      const project = JSON.parse(fs.readFileSync(json, 'utf8'));
      const defaults = checkDefaults(project);
      problems.push(...defaults.problems, ...checkErrorCodes(project));
      summary = `${defaults.checked} optional properties of ${defaults.options} *Options interfaces have a @defaultValue`;
      if (check) problems.push(...compareTrees(DOCS, out));
    }
    if (check) {
      problems.push(...schema.check());
    } else if (problems.length === 0) {
      schema.write();
    }
    if (problems.length) {
      console.error(`docs: ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}`);
      if (check) console.error('Regenerate with `npm run docs` and commit docs/api and schema/.');
      process.exitCode = 1;
      return;
    }
    const what = check ? 'docs/api and schema/fuse-report.schema.json are current' : 'wrote docs/api and schema/fuse-report.schema.json';
    console.log(`docs: ${what}; ${summary} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main();
