#!/usr/bin/env node
'use strict';
// Builds the addon with node-gyp (the build prebuildify uses) into
// build-gyp/Release/torchfold.node, without touching the cmake-js build in
// build/. node-gyp always writes to ./build, so it runs in a staging folder
// whose entries link back to the real sources. Skips the build when the
// output is newer than every input, so a second run takes no time.
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const stage = path.join(root, '.tmp', 'gyp');
const output = path.join(root, 'build-gyp', 'Release', 'torchfold.node');

function newestInput() {
  let newest = 0;
  const visit = (p) => {
    const st = fs.statSync(p);
    if (st.isDirectory()) for (const f of fs.readdirSync(p)) visit(path.join(p, f));
    else newest = Math.max(newest, st.mtimeMs);
  };
  for (const p of ['native', 'binding.gyp', 'scripts/libtorch.js', 'package-lock.json']) visit(path.join(root, p));
  return newest;
}

function upToDate() {
  try {
    return fs.statSync(output).mtimeMs > newestInput();
  } catch {
    return false;
  }
}

function nodeGypArgs() {
  const args = ['rebuild', '--release', '--jobs=max', '--loglevel=warn'];
  // Offline, node-gyp must use the headers Node was installed with.
  if (!process.env.npm_config_nodedir && fs.existsSync('/usr/include/node/node_api.h')) args.push('--nodedir=/usr');
  return args;
}

function main() {
  if (upToDate() && !process.argv.includes('--force')) {
    console.log('build-gyp: build-gyp/Release/torchfold.node is up to date');
    return;
  }
  fs.rmSync(stage, { recursive: true, force: true });
  fs.mkdirSync(stage, { recursive: true });
  for (const entry of ['binding.gyp', 'native', 'scripts', 'node_modules', 'package.json']) {
    fs.symlinkSync(path.join(root, entry), path.join(stage, entry));
  }
  const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  const started = Date.now();
  execFileSync(process.execPath, [nodeGyp, ...nodeGypArgs()], { cwd: stage, stdio: 'inherit' });
  fs.mkdirSync(path.dirname(output), { recursive: true });
  fs.copyFileSync(path.join(stage, 'build', 'Release', 'torchfold.node'), output);
  fs.rmSync(stage, { recursive: true, force: true });
  console.log(`build-gyp: built ${path.relative(root, output)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

main();
