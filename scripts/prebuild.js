#!/usr/bin/env node
'use strict';
// Makes the prebuild: prebuildify (N-API, stripped), for the libtorch
// scripts/libtorch.js finds (by default the project's libtorch 2.x CPU), into
// prebuilds/<platform>-<arch>/. Beside the addon it writes ADDON.json, the
// record of the libtorch the addon needs (version, folder, ABI, CUDA, the
// sonames it links): a prebuild never carries libtorch; lib/addon-load.ts
// reads this record to refuse a prebuild for another libtorch and to explain
// a failed load.
//
// The compiler behind prebuildify is the cmake-js build of record
// (scripts/prebuild-cmake.js), not a second node-gyp build of the same
// sources: one compile, with precompiled headers. node-gyp stays the build
// from source at install (scripts/install.js), which the package test runs.
// prebuildify runs in a staging folder so that nothing it writes lands in
// build/. Skips the work when the prebuild is newer than every input
// (--force rebuilds).
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');
const { locate, failureMessage, writeRecord } = require('./libtorch');

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
  for (const p of ['native', 'CMakeLists.txt', 'scripts/libtorch.js', 'scripts/prebuild.js', 'scripts/prebuild-cmake.js', 'package-lock.json']) {
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

function upToDate(found) {
  const addon = existingAddon();
  if (!addon || !fs.existsSync(`${addon}.json`)) return false;
  const record = JSON.parse(fs.readFileSync(`${addon}.json`, 'utf8'));
  if (record.libtorch?.root !== found.root) return false;
  return fs.statSync(addon).mtimeMs > newestInput();
}

function main() {
  const { found, attempts } = locate();
  if (!found) {
    process.stderr.write(`${failureMessage(attempts)}\n`);
    process.exit(1);
  }
  if (upToDate(found) && !process.argv.includes('--force')) {
    console.log(`prebuild: ${path.relative(root, existingAddon())} is up to date`);
    return;
  }
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  fs.symlinkSync(path.join(root, 'package.json'), path.join(stage, 'package.json'));
  const started = Date.now();
  const env = { ...process.env, PREBUILD_NODE_GYP: path.join(__dirname, 'prebuild-cmake.js') };
  const prebuildify = require.resolve('prebuildify/bin.js', { paths: [root] });
  const r = spawnSync(process.execPath, [prebuildify, '--napi', '--strip', '--tag-libc', '--name', 'torchfold'],
    { cwd: stage, env, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  if (r.status !== 0) throw new Error(`prebuild: prebuildify failed (${r.status ?? r.signal})`);
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
