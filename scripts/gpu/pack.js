#!/usr/bin/env node
'use strict';
// Prepares what scripts/gpu-check.sh needs on the GPU machine, which has no
// Node and reaches no registry: .gpu/node.xz (this machine's node binary) and
// .gpu/modules.tar.xz (the packages the check runs with: the runtime
// dependencies, node-addon-api and node-api-headers for the build, vitest for
// the CUDA tests; found through package-lock.json). Run here, then hand the
// device tool carry: [".gpu", "dist"] (both git-ignored). About 40 MB.
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const root = path.resolve(__dirname, '..', '..');
const out = path.join(root, '.gpu');
const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8')).packages;
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const roots = [...Object.keys(pkg.dependencies), 'vitest', 'node-api-headers'];

/** The lock entry node's resolution picks for `name` required from the package at `from`. */
function resolve(name, from) {
  for (let dir = from; ; dir = dir.slice(0, Math.max(0, dir.lastIndexOf('/node_modules/')))) {
    const candidate = `${dir ? `${dir}/` : ''}node_modules/${name}`;
    if (lock[candidate]) return candidate;
    if (!dir) return null;
  }
}

const keep = new Set();
const visit = (key) => {
  if (!key || keep.has(key)) return;
  const entry = lock[key];
  if (entry.os && !entry.os.includes(process.platform)) return;
  if (entry.cpu && !entry.cpu.includes(process.arch)) return;
  if (entry.libc && !entry.libc.includes('glibc')) return;
  keep.add(key);
  for (const dep of Object.keys({ ...entry.dependencies, ...entry.optionalDependencies, ...entry.peerDependencies })) {
    visit(resolve(dep, key));
  }
};
for (const name of roots) visit(resolve(name, ''));
const present = [...keep].filter((k) => fs.existsSync(path.join(root, k))).sort();

fs.mkdirSync(out, { recursive: true });
const node = path.join(out, 'node.xz');
if (!fs.existsSync(node)) execFileSync('sh', ['-c', `xz -T0 -6 -c "${process.execPath}" > "${node}.tmp" && mv "${node}.tmp" "${node}"`]);
const list = path.join(out, 'modules.list');
fs.writeFileSync(list, `${present.join('\n')}\n`);
execFileSync('tar', ['-cJf', path.join(out, 'modules.tar.xz'), '-C', root, '-T', list], { env: { ...process.env, XZ_OPT: '-T0 -6' } });
const mb = (f) => (fs.statSync(path.join(out, f)).size / 2 ** 20).toFixed(1);
console.log(`gpu pack: .gpu/node.xz ${mb('node.xz')} MB, .gpu/modules.tar.xz ${mb('modules.tar.xz')} MB (${present.length} packages)`);
