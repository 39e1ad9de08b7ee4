#!/usr/bin/env node
'use strict';
// npm's install step for torchfold (package.json "install"). Uses the addon
// that loads here (a local build or the prebuild for this platform, checked
// in a child process so a crash cannot take npm down); when none loads, or
// when asked (`npm install --build-from-source`, TORCHFOLD_BUILD_FROM_SOURCE=1),
// builds it from source with node-gyp against the libtorch
// scripts/libtorch.js finds, records what it needs beside it, and checks that
// it loads. TORCHFOLD_SKIP_INSTALL=1 skips everything (e.g. for a machine that
// only type-checks).
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const say = (s) => process.stderr.write(`torchfold: ${s}\n`);

function truthy(v) {
  return v !== undefined && v !== '' && v !== '0' && v !== 'false';
}

/** Loads the addon in a child process: { ok, file, libtorch } or { ok: false, message }. */
function probe() {
  const script = `
    const b = require(${JSON.stringify(path.join(root, 'dist', 'binding.js'))});
    try {
      const v = b.native().versions();
      process.stdout.write(JSON.stringify({ ok: true, file: b.addonFile(), libtorch: v.libtorch, cuda: v.cudaBuild }));
    } catch (e) {
      process.stdout.write(JSON.stringify({ ok: false, code: e.code, message: e.message }));
    }`;
  const env = { ...process.env };
  delete env.TORCHFOLD_ADDON;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 120000 });
  try {
    return JSON.parse(r.stdout);
  } catch {
    return { ok: false, message: `loading the addon killed its process (${r.signal || `exit ${r.status}`})\n${r.stderr}` };
  }
}

function nodeGyp() {
  // npm hands its own node-gyp to install scripts; a checkout has one in node_modules.
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && fs.existsSync(fromNpm)) return fromNpm;
  try {
    return require.resolve('node-gyp/bin/node-gyp.js', { paths: [root] });
  } catch {
    return null;
  }
}

/** The headers Node was installed with (node-gyp cannot download them offline), or null. */
function nodeDir() {
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? prefix : null;
}

function build() {
  const { locate, failureMessage, writeRecord } = require('./libtorch');
  const { found, attempts } = locate();
  if (!found) {
    say('cannot build from source:');
    process.stderr.write(`${failureMessage(attempts)}\n`);
    process.exit(1);
  }
  const gyp = nodeGyp();
  if (!gyp) {
    say('cannot build from source: node-gyp was not found (npm provides it to install scripts; ' +
      'or run `npm install -g node-gyp`)');
    process.exit(1);
  }
  say(`building from source with node-gyp against libtorch ${found.version} (${found.source}) at ${found.root}`);
  const args = [gyp, 'rebuild', '--release', '--jobs=max'];
  const dir = nodeDir();
  if (dir) args.push(`--nodedir=${dir}`);
  const started = Date.now();
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) {
    say(`the build failed (node-gyp exit ${r.status ?? r.signal}). It needs a C++17 compiler (C++20 for libtorch 2.12 and later: g++ 10 or newer), make and python3 ` +
      '(Debian/Ubuntu: apt-get install -y g++ make python3), and Node\'s headers (offline: set npm_config_nodedir).');
    process.exit(1);
  }
  const addon = path.join(root, 'build', 'Release', 'torchfold.node');
  writeRecord(addon, found);
  say(`built ${path.relative(root, addon)} in ${((Date.now() - started) / 1000).toFixed(0)} s`);
}

function main() {
  if (truthy(process.env.TORCHFOLD_SKIP_INSTALL)) {
    say('TORCHFOLD_SKIP_INSTALL is set: not checking or building the addon');
    return;
  }
  if (fs.existsSync(path.join(root, '.git'))) {
    // A clone: scripts/setup.sh builds the addon (cmake-js, into build/) and the TypeScript.
    return;
  }
  if (!fs.existsSync(path.join(root, 'dist', 'binding.js'))) {
    say('dist/ is missing: this package was packed without its build (npm pack runs `prepack`, which makes it)');
    process.exit(1);
  }
  const fromSource = truthy(process.env.npm_config_build_from_source) ||
    truthy(process.env.TORCHFOLD_BUILD_FROM_SOURCE);
  if (!fromSource) {
    const r = probe();
    if (r.ok) {
      say(`using ${path.relative(root, r.file)} (libtorch ${r.libtorch}${r.cuda ? ', CUDA' : ''})`);
      return;
    }
    say('no prebuilt addon loads on this machine, so it will be built from source. What was tried:');
    process.stderr.write(`${r.message}\n`);
  }
  build();
  const r = probe();
  if (!r.ok) {
    say('the addon built from source does not load:');
    process.stderr.write(`${r.message}\n`);
    process.exit(1);
  }
  say(`using ${path.relative(root, r.file)} (libtorch ${r.libtorch}${r.cuda ? ', CUDA' : ''})`);
}

if (require.main === module) main();
module.exports = { nodeDir };
