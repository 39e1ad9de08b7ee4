'use strict';
// Builds scripts/stress/memprobe.c into a loadable addon (needs cc; no headers).
const { execFileSync } = require('child_process');
const path = require('path');

/** Compiles the probe addon into `dir`; { file } or { error }. */
function buildProbe(dir) {
  const file = path.join(dir, 'memprobe.node');
  try {
    execFileSync('cc', ['-shared', '-fPIC', '-O1', '-o', file, path.join(__dirname, 'memprobe.c')], { stdio: 'pipe' });
    return { file };
  } catch (e) {
    return { error: `probe addon not built (cc failed: ${String(e.message).split('\n')[0]})` };
  }
}

module.exports = { buildProbe };
