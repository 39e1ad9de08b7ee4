#!/usr/bin/env node
'use strict';
// Makes the test fixtures with real PyTorch (Debian's python3-torch, which is
// importable only from /usr/bin/python3). The Python script skips the work
// when its manifest is current, so a second run takes well under a second.
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
