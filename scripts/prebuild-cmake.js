#!/usr/bin/env node
'use strict';
// What scripts/prebuild.js hands prebuildify as its "node-gyp" (PREBUILD_NODE_GYP).
// prebuildify asks it to `rebuild` in its working folder; this brings the
// cmake-js build of record (build/, incremental: nothing to do after
// scripts/setup.sh) up to date and puts its addon where prebuildify looks for
// it, build/Release/. prebuildify then strips, names and places the prebuild.
// So the prebuild is exactly the build the tests ran, compiled once.
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
if (args[0] !== 'rebuild') {
  process.stderr.write(`prebuild-cmake: only 'rebuild' is supported (got ${args.join(' ')})\n`);
  process.exit(2);
}
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const r = spawnSync(process.execPath, [cmakeJs, 'compile', '--out', 'build', '--log-level', 'warn', '--CDTORCHFOLD_WERROR=ON'],
  { cwd: root, stdio: 'inherit' });
if (r.status !== 0) process.exit(r.status ?? 1);
const out = path.join(process.cwd(), 'build', 'Release');
fs.mkdirSync(out, { recursive: true });
fs.copyFileSync(path.join(root, 'build', 'Release', 'torchfold.node'), path.join(out, 'torchfold.node'));
