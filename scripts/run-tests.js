#!/usr/bin/env node
'use strict';
// Runs the whole vitest suite once per libtorch generation, one after the
// other (the machine has two cores; vitest already uses both):
//   1. the default build, build/ (libtorch 2.x: pip's CPU wheel in .libtorch/cpu)
//   2. Debian's libtorch 1.13.1, build-debian/ (TORCHFOLD_ADDON points at it, and
//      LIBTORCH=system, so the locator agrees with the addon under test, as for a
//      user who chose Debian's libtorch)
// scripts/setup.sh --all makes both, and build-cuda/, which
// test/libtorch-builds.test.ts loads in the first run.
//
// The second run leaves out the tests of the package and its prebuild
// (package.test.ts, native-load.test.ts): the package ships one prebuild, for
// the default libtorch, and those tests load it, not the addon under test.
//
//   node scripts/run-tests.js [--only default|debian] [vitest arguments...]
//
// Prints each run's time and a summary; exits 1 when any run failed.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const runs = [
  { name: 'default', label: 'libtorch 2.x, the default build (build/)', addon: null },
  { name: 'debian', label: "Debian's libtorch 1.13 (build-debian/)", addon: 'build-debian/Release/torchfold.node',
    env: { LIBTORCH: 'system' },
    exclude: { 'test/package.test.ts': 'the package and its prebuild are for the default libtorch',
      'test/native-load.test.ts': 'loads the default prebuild, not the addon under test' } },
];

function main(argv) {
  let only = null;
  const rest = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--only') only = argv[++i];
    else rest.push(argv[i]);
  }
  if (only && !runs.some((r) => r.name === only)) {
    console.error(`run-tests: --only takes ${runs.map((r) => r.name).join(' or ')}; got '${only}'`);
    return 2;
  }
  const vitest = path.join(path.dirname(require.resolve('vitest/package.json', { paths: [root] })), 'vitest.mjs');
  const results = [];
  for (const run of runs.filter((r) => !only || r.name === only)) {
    const env = { ...process.env, NO_COLOR: '1', TORCHFOLD_TEST_RUN: run.name };
    delete env.TORCHFOLD_ADDON;
    if (run.addon) {
      const addon = path.join(root, run.addon);
      if (!fs.existsSync(addon)) {
        console.error(`run-tests: ${run.addon} is missing: run bash scripts/setup.sh --all`);
        results.push({ run, status: 1, seconds: 0 });
        continue;
      }
      env.TORCHFOLD_ADDON = addon;
    }
    Object.assign(env, run.env);
    console.log(`\n=== run-tests: ${run.label} ===`);
    const excluded = [];
    for (const [file, why] of Object.entries(run.exclude ?? {})) {
      console.log(`  not in this run: ${file} (${why}; the first run has it)`);
      excluded.push('--exclude', file);
    }
    console.log('');
    const started = Date.now();
    const r = spawnSync(process.execPath, [vitest, 'run', ...excluded, ...rest], { cwd: root, env, stdio: 'inherit' });
    results.push({ run, status: r.status ?? 1, seconds: (Date.now() - started) / 1000 });
  }
  console.log('\n=== run-tests: summary ===');
  for (const { run, status, seconds } of results) {
    console.log(`  ${status === 0 ? 'passed' : 'FAILED'}  ${run.label}  (${seconds.toFixed(0)} s)`);
  }
  return results.every((r) => r.status === 0) ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));
