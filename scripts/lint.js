#!/usr/bin/env node
'use strict';
// npm run lint:   ESLint (eslint.config.mjs, no warnings allowed) and clang-format --dry-run --Werror
//                 (.clang-format) over the C++; exits 1 on any finding, or when clang-format is missing.
// npm run format: the same tools fixing what they can (eslint --fix, clang-format -i).
// Both steps always run, so one run reports everything.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const fix = process.argv.includes('--fix');
const clangFormat = process.env.CLANG_FORMAT || 'clang-format';

// The C++ that clang-format owns: every .h and .cc under native/, and the stress probe.
function cppFiles() {
  const files = fs.readdirSync(path.join(root, 'native'), { recursive: true })
    .filter((f) => /\.(h|cc)$/.test(f))
    .map((f) => path.join('native', f));
  files.push(path.join('scripts', 'stress', 'memprobe.c'));
  return files.sort();
}

function eslint() {
  const bin = path.join(path.dirname(require.resolve('eslint/package.json')), 'bin', 'eslint.js');
  const args = fix ? ['--fix', '.'] : ['--max-warnings', '0', '.'];
  const r = spawnSync(process.execPath, [bin, ...args], { cwd: root, stdio: 'inherit' });
  if (r.status === 0) return true;
  console.error(`lint: ESLint found problems${fix ? ' it cannot fix' : ''}` +
    `${fix ? '' : ' (npm run format fixes some; see eslint.config.mjs for the rules)'}.`);
  return false;
}

function clang() {
  const version = spawnSync(clangFormat, ['--version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) {
    console.error(`lint: ${clangFormat} not found, so the C++ was not checked. Install it with\n` +
      '  apt-get install -y clang-format\n' +
      '(scripts/setup.sh, run by npm test, does that as root), or set CLANG_FORMAT to its path.');
    return false;
  }
  const files = cppFiles();
  const args = fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
  const r = spawnSync(clangFormat, args, { cwd: root, stdio: 'inherit' });
  if (r.status === 0) return true;
  const major = /version (\d+)/.exec(version.stdout)?.[1];
  console.error(`lint: clang-format ${fix ? 'failed' : 'found C++ not formatted as .clang-format says'}.` +
    `${fix ? '' : ' Run `npm run format` to reformat it (whitespace only).'}` +
    `${major && major !== '14' ? `\nNote: .clang-format was tuned with clang-format 14 (Debian 12); this is ${major}, which may lay out some code differently.` : ''}`);
  return false;
}

const ok = [eslint(), clang()].every(Boolean);
if (ok && !fix) console.log('lint: ESLint and clang-format found nothing.');
process.exit(ok ? 0 : 1);
