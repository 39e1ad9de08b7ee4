#!/usr/bin/env node
'use strict';
// Makes the test fixtures with real PyTorch: most with Debian's PyTorch 1.13
// (python3-torch, importable only from /usr/bin/python3), and test/fixtures/pytorch2
// with PyTorch 2.14 (.libtorch/cuda, which scripts/setup.sh --all installs; the
// python3 on PATH with that folder on PYTHONPATH). Each Python script skips the
// work when its manifest is current, so a second run takes a few seconds.
const { spawnSync } = require('child_process');
const path = require('path');

const python = process.env.TORCHFOLD_PYTHON || '/usr/bin/python3';
const root = path.resolve(__dirname, '..');
const out = process.argv[2] || path.join(root, 'test', 'fixtures');

const probe = spawnSync(python, ['-c', 'import torch, torchvision'], { stdio: 'ignore' });
if (probe.status !== 0) {
  console.error(`make-fixtures: ${python} cannot import torch and torchvision.\n` +
    'Install them with: apt-get install -y python3-torch python3-torchvision (or run bash scripts/setup.sh as root),\n' +
    'or point TORCHFOLD_PYTHON at a python that has them.');
  process.exit(1);
}
const scripts = [
  ['make_fixtures.py', out],
  ['make_fuse_fixtures.py', path.join(out, 'fuse')],
  ['make_transform_fixtures.py', path.join(out, 'transform')],
  ['make_tune_fixtures.py', path.join(out, 'tune')],
];
// The bad-file corpus (damaged copies of a fixture model) comes last: it needs that model.
const corpus = ['make_bad_corpus.py', path.join(out, 'convbn_scripted.pt'), path.join(out, 'bad'), '--seed', '1', '--count', '240'];
for (const args of [...scripts, corpus]) {
  const r = spawnSync(python, [path.join(root, 'scripts', args[0]), ...args.slice(1)], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status === null ? 1 : r.status);
}

// PyTorch 2.x: models saved the way users save them today.
const torch2 = process.env.TORCHFOLD_PYTORCH2_PATH || path.join(root, '.libtorch', 'cuda');
const python2 = process.env.TORCHFOLD_PYTHON2 || 'python3';
const env2 = { ...process.env, PYTHONPATH: [torch2, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter) };
if (spawnSync(python2, ['-c', 'import torch, torchvision'], { stdio: 'ignore', env: env2 }).status !== 0) {
  console.error(`make-fixtures: ${python2} cannot import PyTorch 2.x and torchvision from ${torch2}.\n` +
    'Install them with: bash scripts/setup.sh --all (into .libtorch/cuda), or point TORCHFOLD_PYTORCH2_PATH at a\n' +
    'folder that holds torch and torchvision for the python3 on PATH (or TORCHFOLD_PYTHON2 at a python that has them).');
  process.exit(1);
}
const r2 = spawnSync(python2, [path.join(root, 'scripts', 'make_pytorch2_fixtures.py'), path.join(out, 'pytorch2')],
  { stdio: 'inherit', env: env2 });
if (r2.status !== 0) process.exit(r2.status === null ? 1 : r2.status);
