#!/usr/bin/env node
'use strict';
// Makes the prebuild: prebuildify (N-API, stripped) over binding.gyp, for the
// libtorch scripts/libtorch.js finds, into prebuilds/<platform>-<arch>/.
// Beside the addon it writes ADDON.json, the record of the libtorch the addon
// needs (version, ABI, CUDA, the sonames it links): a prebuild never carries
// libtorch, and lib/binding.ts reads this record to explain a failed load.
//
// node-gyp always builds into ./build, where the cmake-js build lives, so
// prebuildify runs in a staging folder whose entries link back to the real
// sources. Skips the work when the prebuild is newer than every input
// (--force rebuilds).
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { locate, failureMessage, writeRecord } = require('./libtorch');
const { nodeDir } = require('./install');

const root = path.resolve(__dirname, '..');
const stage = path.join(root, '.tmp', 'prebuild');
const tuple = `${process.platform}-${process.arch}`;
const outDir = path.join(root, 'prebuilds', tuple);

function newestInput() {
  let newest = 0;
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const f of fs.readdirSync(p)) visit(path.join(p, f));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ['native', 'binding.gyp', 'scripts/libtorch.js', 'scripts/prebuild.js', 'package-lock.json']) {
    visit(path.join(root, p));
  }
  return newest;
}

function existingAddon() {
  try {
    const f = fs.readdirSync(outDir).find((n) => n.endsWith('.node'));
    return f ? path.join(outDir, f) : null;
  } catch {
    return null;
  }
}

function upToDate() {
  const addon = existingAddon();
  if (!addon || !fs.existsSync(`${addon}.json`)) return false;
  return fs.statSync(addon).mtimeMs > newestInput();
}

function main() {
  const { found, attempts } = locate();
  if (!found) {
    process.stderr.write(`${failureMessage(attempts)}\n`);
    process.exit(1);
  }
  if (upToDate() && !process.argv.includes('--force')) {
    console.log(`prebuild: ${path.relative(root, existingAddon())} is up to date`);
    return;
  }
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  for (const entry of ['binding.gyp', 'native', 'scripts', 'node_modules', 'package.json']) {
    fs.symlinkSync(path.join(root, entry), path.join(stage, entry));
  }
  const started = Date.now();
  const env = { ...process.env };
  const nodedir = nodeDir();
  if (nodedir) env.npm_config_nodedir = nodedir;
  // prebuildify runs node-gyp through a shell; point it at this package's node-gyp.
  env.PREBUILD_NODE_GYP = require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  env.JOBS = 'max';
  const prebuildify = require.resolve('prebuildify/bin.js', { paths: [root] });
  const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', '--tag-libc', '--name', 'torchfold'],
    { cwd: stage, env, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  if (r.status !== 0) throw new Error(`prebuild: prebuildify failed (${r.status ?? r.signal})`);
  // node-gyp compiles with -Wall -Wextra: a warning in torchfold's own sources fails the prebuild.
  const ours = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => /^(\.\.\/)?native\/.*warning:/.test(l));
  if (ours.length) {
    process.stderr.write(`prebuild: ${ours.length} compiler warning(s) in native/:\n${ours.join('\n')}\n`);
    process.exit(1);
  }
  const built = fs.readdirSync(path.join(stage, 'prebuilds', tuple)).filter((n) => n.endsWith('.node'));
  if (built.length !== 1) throw new Error(`prebuild: expected one addon from prebuildify, got ${built.join(', ') || 'none'}`);
  fs.rmSync(outDir, { recursive: true, force: true });
  fs.mkdirSync(outDir, { recursive: true });
  const addon = path.join(outDir, built[0]);
  fs.copyFileSync(path.join(stage, 'prebuilds', tuple, built[0]), addon);
  writeRecord(addon, found);
  fs.rmSync(stage, { recursive: true, force: true });
  const mb = (fs.statSync(addon).size / 2 ** 20).toFixed(1);
  console.log(`prebuild: ${path.relative(root, addon)} (${mb} MiB, libtorch ${found.version} ${found.source}) ` +
    `in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main();
