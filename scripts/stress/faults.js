'use strict';
// Faults and data safety: what a crash, a full disk or a stop request leaves
// on disk. Four scenarios, one row each (see common.js for the row contract):
//   a. a process saving a model is SIGKILLed at random moments;
//   b. `torchfold optimize --in-place` is SIGKILLed at random moments;
//   c. saving (library and CLI) into a filesystem that runs out of space;
//   d. `torchfold optimize` over a folder stopped by SIGINT / SIGTERM, then --resume.
// Child processes re-run this file with `--child <mode> <json>` (see the end).
// TORCHFOLD_FAULTS_FS=tmpfs|unshare|rlimit forces how scenario c gets its small filesystem;
// TORCHFOLD_FAULTS_ONLY=a,b,c,d picks scenarios.
const { spawn, spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const { ROOT, row, rss, loopDelay, scratch, rng, pct } = require('./common');

const SELF = __filename;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The environment every child gets: the addon to load (absolute), no colours. */
function childEnv(ctx) {
  const env = { ...process.env, NO_COLOR: '1' };
  if (!env.TORCHFOLD_ADDON) {
    const built = path.join(ctx.root || ROOT, 'build', 'Release', 'torchfold.node');
    if (fs.existsSync(built)) env.TORCHFOLD_ADDON = built;
  } else {
    env.TORCHFOLD_ADDON = path.resolve(env.TORCHFOLD_ADDON);
  }
  return env;
}

/** Loads the library in this process, with the same addon the children use. */
function library(ctx) {
  const env = childEnv(ctx);
  if (env.TORCHFOLD_ADDON && !process.env.TORCHFOLD_ADDON) process.env.TORCHFOLD_ADDON = env.TORCHFOLD_ADDON;
  return require(ctx.dist);
}

/**
 * Starts a process (node by default) with piped stdout/stderr. waitFor(re)
 * resolves to the match once stdout matches, or null if it exits first.
 */
function launch(args, { cwd, env, stdin = 'ignore', command = process.execPath } = {}) {
  const child = spawn(command, args, { cwd, env, stdio: [stdin, 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  const waiters = [];
  const check = () => {
    for (const w of [...waiters]) {
      const m = w.re.exec(stdout);
      if (m) { waiters.splice(waiters.indexOf(w), 1); w.resolve(m); }
    }
  };
  child.stdout.setEncoding('utf8').on('data', (s) => { stdout += s; check(); });
  child.stderr.setEncoding('utf8').on('data', (s) => { stderr += s; });
  const started = performance.now();
  const done = new Promise((resolve) => {
    child.on('error', (error) => resolve({ code: null, signal: null, error, stdout, stderr, ms: performance.now() - started }));
    child.on('close', (code, signal) => {
      for (const w of waiters.splice(0)) w.resolve(null);
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started });
    });
  });
  return { child, done, waitFor: (re) => new Promise((resolve) => { waiters.push({ re, resolve }); check(); }) };
}

function sha256(file) {
  return new Promise((resolve) => {
    const h = crypto.createHash('sha256');
    fs.createReadStream(file, { highWaterMark: 1 << 20 })
      .on('data', (c) => h.update(c))
      .on('error', () => resolve(null))
      .on('end', () => resolve(h.digest('hex')));
  });
}

function sizeOf(file) {
  try { return fs.statSync(file).size; } catch { return null; }
}

/** Temporary files and folders of torchfold's writers in `dir` (.NAME.tmp-PID-RAND). */
function temporaries(dir, base) {
  let names = [];
  try { names = fs.readdirSync(dir); } catch { return []; }
  return names.filter((n) => /\.tmp-\d+-/.test(n) && (!base || n.startsWith(`.${base}.`))).sort();
}

/** Every path under `dir`, relative, folders included (hidden ones too). */
function tree(dir) {
  const out = [];
  const walk = (d, rel) => {
    let entries = [];
    try { entries = fs.readdirSync(d, { withFileTypes: true }); } catch { return; }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      out.push(e.isDirectory() ? `${r}/` : r);
      if (e.isDirectory()) walk(path.join(d, e.name), r);
    }
  };
  walk(dir, '');
  return out.sort();
}

/** true when `file` loads as TorchScript, else the error code (or message). */
async function loads(tf, file) {
  try {
    const m = await tf.load(file);
    await m.dispose();
    return true;
  } catch (e) {
    return e.code || e.message;
  }
}

function firstLine(text) {
  const line = String(text || '').split('\n').map((s) => s.trim()).find((s) => s && !s.startsWith('frame #'));
  return line ? line.slice(0, 200) : '';
}

function lastJson(stdout) {
  const lines = String(stdout).trim().split('\n').filter((l) => l.startsWith('{'));
  return lines.length ? JSON.parse(lines[lines.length - 1]) : null;
}

const median = (xs) => {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

function exitOf(res) {
  return res.signal ? res.signal : res.code;
}

// --- a. save killed --------------------------------------------------------

async function saveKilled(ctx, tf, env) {
  const kills = ctx.quick ? 8 : 40;
  const random = rng(ctx.seed);
  const dir = scratch(ctx, 'save-kill');
  const src = path.join(ctx.root, 'test', 'fixtures', 'resnet18_traced.pt');
  const [refA, refB, work] = ['ref-a', 'ref-b', 'work'].map((d) => {
    fs.mkdirSync(path.join(dir, d));
    return path.join(dir, d, 'model.pt');
  });
  const workDir = path.dirname(work);
  // The two versions, each saved once normally under the same file name (the
  // archive's top folder is named after the file): A as loaded, B fused.
  const ref = await launch([SELF, '--child', 'writer', JSON.stringify({ dist: ctx.dist, src, refs: [refA, refB] })], { env }).done;
  if (ref.code !== 0) throw new Error(`faults: the reference saves failed (${exitOf(ref)}): ${firstLine(ref.stderr)}`);
  const saveTimes = [...lastJson(ref.stdout).saveMs];
  const hashes = { A: await sha256(refA), B: await sha256(refB) };
  if (hashes.A === hashes.B) throw new Error('faults: the two versions have the same bytes');
  fs.copyFileSync(refA, work);

  const seen = { A: 0, B: 0 };
  const lost = [];
  let delivered = 0, crashes = 0, midWrite = 0, leftAfterKills = 0, staleAfterSave = 0, savesDone = 0;
  let previous = [];
  // A first load and dispose in this process (the addon and libtorch load
  // then), so memory and event-loop delay cover only the repeated checks.
  await loads(tf, refA);
  const delay = loopDelay();
  const rss0 = rss();
  let rssMid = null;
  for (let k = 0; k < kills; k++) {
    if (k === Math.floor(kills / 2)) rssMid = rss();
    const w = launch([SELF, '--child', 'writer', JSON.stringify({ dist: ctx.dist, src, target: work })], { env, stdin: 'pipe' });
    // Let 0 or 1 saves finish, then kill at a random point of the next one
    // (up to 1.2 times a typical save, so some kills land between saves).
    const skip = Math.floor(random() * 2);
    const wait = random() * 1.2 * median(saveTimes);
    const begun = await w.waitFor(new RegExp(`^begin ${skip}$`, 'm'));
    if (begun) await sleep(wait);
    w.child.kill('SIGKILL');
    const res = await w.done;
    if (res.signal === 'SIGKILL' && begun) delivered++;
    else { crashes++; lost.push(`writer ${k + 1} ended by itself (${exitOf(res)}): ${firstLine(res.stderr)}`); }
    const finished = [...res.stdout.matchAll(/^saved \d+ ([\d.]+)$/gm)].map((m) => Number(m[1]));
    savesDone += finished.length;
    saveTimes.push(...finished);
    const temps = temporaries(workDir, 'model.pt');
    const fresh = temps.filter((t) => !previous.includes(t));
    if (fresh.length) midWrite++;
    leftAfterKills += fresh.length;
    // Folders of earlier kills still here although this writer finished a save.
    if (finished.length) staleAfterSave += previous.filter((t) => temps.includes(t)).length;
    previous = temps;
    const h = await sha256(work);
    const which = h === hashes.A ? 'A' : h === hashes.B ? 'B' : null;
    const ok = await loads(tf, work);
    if (which && ok === true) seen[which]++;
    else lost.push(`kill ${k + 1}: ${which ? `version ${which}` : `unknown bytes (${sizeOf(work)} B)`}, load: ${ok}`);
  }
  const maxDelayMs = delay.stop();
  const rssGrowthPct = pct(rss(), rss0);
  const leftBeforeFinal = temporaries(workDir, 'model.pt').length;
  // One normal save to the same target, then count what is left.
  const m = await tf.load(refB);
  let finalSave = 'ok';
  try { await m.save(work); } catch (e) { finalSave = e.code || e.message; }
  await m.dispose();
  const leftAfterFinal = temporaries(workDir, 'model.pt').length;
  const finalHash = await sha256(work);
  if (finalSave !== 'ok' || finalHash !== hashes.B) lost.push(`final save: ${finalSave}, ${finalHash === hashes.B ? 'B' : 'unexpected bytes'}`);
  const dataLost = lost.filter((l) => l.startsWith('kill') || l.startsWith('final')).length;
  fs.rmSync(dir, { recursive: true, force: true });
  const notes = `${delivered} SIGKILLs during ${savesDone} completed saves (median save ${Math.round(median(saveTimes))} ms); ` +
    `target after each kill: old/new A ${seen.A}, B ${seen.B}, partial/unknown/unloadable ${dataLost}; ` +
    `temp folders: ${leftAfterKills} left by ${midWrite} kills, ${staleAfterSave} still there after a later save, ` +
    `${leftBeforeFinal} before and ${leftAfterFinal} after a final save; this process's RSS over its ${kills} check loads: ` +
    `+${Math.round(pct(rssMid, rss0))}% by the half, +${Math.round(rssGrowthPct)}% at the end` + (lost.length ? `; ${lost.slice(0, 3).join('; ')}` : '');
  ctx.log(`faults: save killed: ${notes}`);
  return row({
    scenario: 'save killed (SIGKILL)',
    load: `ResNet-18 (47 MB) saved over one path, old/new alternating, ${kills} kills`,
    faults: delivered, crashes, dataLost, rssGrowthPct, maxDelayMs,
    ok: delivered === kills && crashes === 0 && dataLost === 0 && leftAfterFinal === 0,
    notes,
  });
}

// --- b. CLI --in-place killed ----------------------------------------------

async function inPlaceKilled(ctx, tf, env) {
  const kills = ctx.quick ? 8 : 40;
  const random = rng((ctx.seed ^ 0x5bd1e995) >>> 0);
  const dir = scratch(ctx, 'inplace-kill');
  const src = path.join(ctx.root, 'test', 'fixtures', 'resnet18_traced.pt');
  const cli = path.join(ctx.dist, 'cli', 'main.js');
  const args = [cli, 'optimize', 'model.pt', '--in-place', '--quiet'];
  const origSha = await sha256(src);
  // The complete output, from an uninterrupted run under the same name.
  const refDir = path.join(dir, 'ref');
  fs.mkdirSync(refDir);
  fs.copyFileSync(src, path.join(refDir, 'model.pt'));
  const refWatch = watchFor(refDir, BACKUP_TEMP);
  const t0 = performance.now();
  const ref = await launch(args, { cwd: refDir, env }).done;
  const tEnd = performance.now();
  const tBackup = await Promise.race([refWatch.seen, sleep(0).then(() => null)]);
  refWatch.close();
  if (ref.code !== 0) throw new Error(`faults: optimize --in-place failed (${exitOf(ref)}): ${ref.stderr}`);
  const outSha = await sha256(path.join(refDir, 'model.pt'));
  const runTimes = [tEnd - t0];
  // From the start of the backup copy to the end: the part that writes.
  const writeMs = tBackup ? tEnd - tBackup : 0.3 * (tEnd - t0);

  const work = path.join(dir, 'work');
  fs.mkdirSync(work);
  const file = path.join(work, 'model.pt');
  const phases = { untouched: 0, backedUp: 0, replaced: 0 };
  const lost = [];
  const verified = new Set();
  let delivered = 0, finishedFirst = 0, crashes = 0, badBackups = 0, leftAfterKills = 0;
  let previous = [];
  for (let k = 0; k < kills; k++) {
    if ((await sha256(file)) !== origSha) fs.copyFileSync(src, file);
    const backupsBefore = backups(work).length;
    // Even kills: at a random moment of the whole run. Odd kills: at a random
    // moment after the backup copy starts (the writes), seen with fs.watch.
    const watch = watchFor(work, BACKUP_TEMP);
    const run = launch(args, { cwd: work, env });
    const u = random();
    if (k % 2 === 0) await Promise.race([run.done, sleep(median(runTimes) * (0.1 + u))]);
    else if (await Promise.race([watch.seen, run.done.then(() => null)])) await sleep(u * 1.1 * writeMs);
    watch.close();
    run.child.kill('SIGKILL');
    const res = await run.done;
    if (res.signal === 'SIGKILL') delivered++;
    else if (res.code === 0) { finishedFirst++; runTimes.push(res.ms); }
    else { crashes++; lost.push(`run ${k + 1} failed by itself (${exitOf(res)}): ${firstLine(res.stderr)}`); }
    const h = await sha256(file);
    const made = backups(work).length > backupsBefore;
    if (h === origSha) phases[made ? 'backedUp' : 'untouched']++;
    else {
      const ok = await loads(tf, file);
      let provenance = null;
      try { provenance = (await tf.readExtraFiles(file, ['torchfold.json']))['torchfold.json'] ?? null; } catch { /* checked below */ }
      if (h === outSha && ok === true && provenance) phases.replaced++;
      else lost.push(`kill ${k + 1}: model.pt is ${h === outSha ? 'the output' : `unknown bytes (${sizeOf(file)} B)`}, load: ${ok}, provenance: ${provenance ? 'yes' : 'no'}`);
    }
    for (const b of backups(work)) {
      if (verified.has(b)) continue;
      verified.add(b);
      if ((await sha256(path.join(work, b))) !== origSha) { badBackups++; lost.push(`kill ${k + 1}: ${b} is not a complete copy (${sizeOf(path.join(work, b))} B)`); }
    }
    const temps = temporaries(work);
    leftAfterKills += temps.filter((t) => !previous.includes(t)).length;
    previous = temps;
  }
  // One uninterrupted run, then count what is left.
  if ((await sha256(file)) !== origSha) fs.copyFileSync(src, file);
  const final = await launch(args, { cwd: work, env }).done;
  const finalOk = final.code === 0 && (await sha256(file)) === outSha;
  if (!finalOk) lost.push(`final run: exit ${exitOf(final)}, ${firstLine(final.stderr)}`);
  const left = temporaries(work);
  const leftSave = left.filter((t) => t.startsWith('.model.pt.tmp-')).length;
  const leftBackup = left.filter((t) => t.startsWith('.model.pt.bak.tmp-')).length;
  const dataLost = lost.filter((l) => l.startsWith('kill')).length;
  const nBackups = backups(work).length;
  fs.rmSync(dir, { recursive: true, force: true });
  const notes = `${delivered} SIGKILLs (${finishedFirst} runs finished before the kill; a run takes ~${Math.round(median(runTimes))} ms, ` +
    `its backup and save ~${Math.round(writeMs)} ms); ` +
    `model.pt after each: original ${phases.untouched} (no backup yet) + ${phases.backedUp} (backup made), complete output ${phases.replaced}, ` +
    `partial/unknown ${dataLost}; ${nBackups} backups, ${badBackups} incomplete; temp files: ${leftAfterKills} left by kills, ` +
    `after a final clean run ${leftSave} save folders + ${leftBackup} backup copies` + (lost.length ? `; ${lost.slice(0, 3).join('; ')}` : '');
  ctx.log(`faults: in-place killed: ${notes}`);
  return row({
    scenario: 'CLI --in-place killed (SIGKILL)',
    load: `optimize --in-place on ResNet-18 (47 MB), ${kills} kills`,
    faults: delivered, crashes, dataLost: dataLost + badBackups,
    ok: crashes === 0 && dataLost === 0 && badBackups === 0 && finalOk && left.length === 0 && delivered > 0,
    notes,
  });
}

const BACKUP_TEMP = /^\.model\.pt\.bak\.tmp-/;

/** Watches `dir`; `seen` resolves to the time a name matching `re` first shows up. */
function watchFor(dir, re) {
  let watcher = null;
  const seen = new Promise((resolve) => {
    watcher = fs.watch(dir, (event, name) => { if (name && re.test(String(name))) resolve(performance.now()); });
    watcher.on('error', () => {});
  });
  return { seen, close: () => watcher.close() };
}

function backups(dir) {
  return fs.readdirSync(dir).filter((n) => /^model\.pt\.bak(\.\d+)?$/.test(n)).sort();
}

// --- c. disk full ----------------------------------------------------------

const SMALL_FS_BYTES = 8 * 1024 * 1024;

/** How this process can get a small filesystem: 'tmpfs' (root), 'unshare' (user namespace), 'rlimit' (RLIMIT_FSIZE), or null. */
function smallFsStrategy(probeDir) {
  const forced = process.env.TORCHFOLD_FAULTS_FS;
  const can = {
    tmpfs: () => {
      if (typeof process.getuid !== 'function' || process.getuid() !== 0) return false;
      if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', probeDir]).status !== 0) return false;
      spawnSync('umount', [probeDir]);
      return true;
    },
    unshare: () => spawnSync('unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c',
      'mount -t tmpfs -o size=1m tmpfs "$0"', probeDir]).status === 0,
    rlimit: () => spawnSync('prlimit', [`--fsize=${SMALL_FS_BYTES}`, 'true']).status === 0
      || spawnSync('bash', ['-c', 'ulimit -f 8192']).status === 0,
  };
  const order = forced ? [forced] : ['tmpfs', 'unshare', 'rlimit'];
  for (const s of order) if (can[s] && can[s]()) return s;
  return null;
}

/** The command that runs `argv` (node …) with `dir` as a small filesystem, under `strategy`. */
function wrapSmallFs(strategy, dir, argv) {
  const kb = SMALL_FS_BYTES / 1024;
  if (strategy === 'unshare') {
    return ['unshare', ['--user', '--map-root-user', '--mount', 'sh', '-c',
      `mount -t tmpfs -o size=${kb}k tmpfs "$0" && exec "$@"`, dir, ...argv]];
  }
  if (strategy === 'rlimit') {
    if (spawnSync('prlimit', ['--fsize=1', 'true']).status === 0) return ['prlimit', [`--fsize=${SMALL_FS_BYTES}`, ...argv]];
    return ['bash', ['-c', `ulimit -f ${kb} && exec "$@"`, 'bash', ...argv]];
  }
  return [argv[0], argv.slice(1)];
}

function unmount(dir) {
  for (let i = 0; i < 10; i++) {
    if (spawnSync('umount', [dir]).status === 0) return true;
    spawnSync('sleep', ['0.2']);
  }
  return spawnSync('umount', ['-l', dir]).status === 0;
}

/**
 * Runs the disk-full probe (a child that does every write on the small
 * filesystem and reports what it saw as JSON). Exported for test/faults.test.ts.
 */
async function diskFullProbe({ root = ROOT, dist = path.join(ROOT, 'dist'), tmp, env = childEnv({ root }), strategy } = {}) {
  const base = fs.mkdtempSync(path.join(tmp, 'disk-full-'));
  const mnt = path.join(base, 'small');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(mnt);
  fs.mkdirSync(path.join(outside, 'in'), { recursive: true });
  // The CLI's inputs, prepared here: under a file size limit the probe could not copy them.
  const fixtures = path.join(root, 'test', 'fixtures');
  fs.copyFileSync(path.join(fixtures, 'mobilenet_v2_traced.pt'), path.join(outside, 'in', 'a.pt'));
  fs.copyFileSync(path.join(fixtures, 'convbn_scripted.pt'), path.join(outside, 'in', 'b.pt'));
  const how = strategy === undefined ? smallFsStrategy(mnt) : strategy;
  let mounted = false;
  try {
    if (!how) return { strategy: null, reason: 'no tmpfs (not root, no user namespaces) and no RLIMIT_FSIZE' };
    if (how === 'tmpfs') {
      const m = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${SMALL_FS_BYTES / 1024}k`, 'tmpfs', mnt], { encoding: 'utf8' });
      if (m.status !== 0) throw new Error(`mount failed: ${m.stderr}`);
      mounted = true;
    }
    const args = { root, dist, dir: mnt, outside, strategy: how, limit: SMALL_FS_BYTES };
    const [cmd, argv] = wrapSmallFs(how, mnt, [process.execPath, SELF, '--child', 'diskfull', JSON.stringify(args)]);
    const res = await launch(argv, { env, command: cmd }).done;
    const facts = lastJson(res.stdout);
    if (!facts) return { strategy: how, error: `the probe printed nothing (${exitOf(res)}): ${firstLine(res.stderr)}` };
    return facts;
  } finally {
    if (mounted && !unmount(mnt)) console.error(`faults: could not unmount ${mnt}`);
    try { fs.rmSync(base, { recursive: true, force: true }); } catch { /* a lazy unmount still in progress */ }
  }
}

async function diskFull(ctx, tf, env) {
  const facts = await diskFullProbe({ root: ctx.root, dist: ctx.dist, tmp: ctx.tmp, env });
  if (!facts.strategy || facts.error) {
    return row({ scenario: 'disk full', load: 'save and optimize onto a full filesystem', ok: false,
      notes: `not run: ${facts.reason || facts.error}` });
  }
  let faults = 0, crashes = 0, dataLost = 0;
  const parts = [];
  const codes = new Set();
  let ok = true;
  for (const s of facts.saves) {
    if (s.skipped) { parts.push(`${s.name}: skipped (${s.skipped})`); continue; }
    faults++;
    const died = s.exit !== 0;
    if (died) crashes++;
    if (!s.intact) dataLost++;
    const code = s.outcome === 'rejected' ? s.code : s.outcome === 'saved' ? 'resolved' : `process ${s.exit}`;
    codes.add(code);
    ok = ok && !died && s.outcome === 'rejected' && s.code === 'ERR_IO' && s.isTorchfoldError && s.intact && s.oldLoads === true &&
      s.temps.length === 0 && (s.freeLostBytes === null || s.freeLostBytes === 0);
    parts.push(`${s.name}: ${code}${s.outcome === 'died' ? ` (${s.stderr})` : ''}, old file ${s.intact ? 'intact' : 'CHANGED'}, ` +
      `temps left ${s.temps.length}${s.freeLostBytes ? ` (${s.freeLostBytes} B of space held)` : ''}`);
  }
  const c = facts.cli;
  faults++;
  const cliDied = c.exit !== 0 && c.exit !== 1;
  if (cliDied) crashes++;
  const partial = c.outputs.filter((o) => !o.complete);
  dataLost += partial.length;
  codes.add(`cli ${c.exit}`);
  const big = c.report?.results?.find((x) => x.input.endsWith('a.pt'));
  const small = c.report?.results?.find((x) => x.input.endsWith('b.pt'));
  ok = ok && c.exit === 1 && /ERR_IO/.test(c.stdout + c.stderr) && partial.length === 0 && c.temps.length === 0 &&
    big?.status === 'failed' && big?.error?.code === 'ERR_IO' && small?.status === 'done';
  parts.push(`CLI batch (14.5 MB then 24 KB model): exit ${c.exit}${cliDied ? ` (${c.stderr})` : ''}, ` +
    `report ${c.report ? `a.pt ${big?.status}/${big?.error?.code ?? '-'}, b.pt ${small?.status}` : 'not written'}, ` +
    `outputs ${c.outputs.map((o) => `${o.name}${o.complete ? '' : ' PARTIAL'}`).join(',') || 'none'}, temps left ${c.temps.length}`);
  const notes = `${facts.strategy} of ${facts.limit / 2 ** 20} MiB; ${parts.join('; ')}`;
  ctx.log(`faults: disk full: ${notes}`);
  return row({
    scenario: 'disk full',
    load: `save over an existing model and optimize --out-dir onto a full ${facts.strategy === 'rlimit' ? 'file size limit' : 'filesystem'}`,
    faults, crashes, dataLost, ok, notes: `${notes}; codes seen: ${[...codes].join(', ')}`,
  });
}

// --- d. CLI interrupted ----------------------------------------------------

async function cliInterrupted(ctx, tf, env) {
  const random = rng((ctx.seed * 7919 + 13) >>> 0);
  const dir = scratch(ctx, 'cli-stop');
  const fixture = ctx.quick ? 'mobilenet_v2_traced.pt' : 'resnet18_traced.pt';
  const src = path.join(ctx.root, 'test', 'fixtures', fixture);
  const names = ['m1', 'm2', 'm3', 'm4', 'm5', 'm6'].map((n) => `${n}.pt`);
  const cli = path.join(ctx.dist, 'cli', 'main.js');
  const setup = (name) => {
    const d = path.join(dir, name);
    fs.mkdirSync(path.join(d, 'in'), { recursive: true });
    for (const n of names) fs.copyFileSync(src, path.join(d, 'in', n));
    return d;
  };
  const batch = (extra) => [cli, 'optimize', 'in', '--out-dir', 'out', '--quiet', ...extra];
  // An uninterrupted run: the outputs every other run must match byte for byte.
  const refDir = setup('ref');
  const ref = await launch(batch(['--report', 'r.json']), { cwd: refDir, env }).done;
  if (ref.code !== 0) throw new Error(`faults: optimize failed (${exitOf(ref)}): ${ref.stderr}`);
  const expected = {};
  for (const n of names) expected[n] = await sha256(path.join(refDir, 'out', n));
  const perInputMs = ref.ms / names.length;

  const problems = [];
  let signals = 0, crashes = 0, dataLost = 0;
  const lines = [];
  for (const [label, sigs] of [['SIGINT', ['SIGINT']], ['SIGTERM', ['SIGTERM']], ['SIGINT twice', ['SIGINT', 'SIGINT']]]) {
    const d = setup(label.replace(/ /g, '-'));
    const run = launch(batch(['--report', 'r.json']), { cwd: d, env });
    const first = await run.waitFor(/^ok /m);
    await sleep(random() * perInputMs);
    for (const [i, sig] of sigs.entries()) {
      if (i > 0) await sleep(10 + random() * 50);  // while the step in progress still runs
      run.child.kill(sig);
      signals++;
    }
    const res = await run.done;
    const want = sigs[0] === 'SIGTERM' ? 143 : 130;
    if (!first || res.code !== want) {
      // Killed by the very signal sent: the handler was already removed (no
      // crash, but not the documented exit code either).
      if (first && res.signal === sigs[sigs.length - 1]) problems.push(`${label}: killed by ${res.signal} instead of exiting ${want}`);
      else { crashes++; problems.push(`${label}: exit ${exitOf(res)}, expected ${want}: ${firstLine(res.stderr)}`); }
    }
    const present = fs.existsSync(path.join(d, 'out')) ? fs.readdirSync(path.join(d, 'out')) : [];
    const temps = tree(d).filter((f) => f.includes('.tmp-'));
    let bad = 0;
    for (const n of present) {
      if (!(n in expected) || (await sha256(path.join(d, 'out', n))) !== expected[n]) { bad++; problems.push(`${label}: out/${n} is not the complete output`); }
    }
    dataLost += bad;
    if (temps.length) problems.push(`${label}: temporary files left: ${temps.join(', ')}`);
    let report = null;
    try { report = JSON.parse(fs.readFileSync(path.join(d, 'r.json'), 'utf8')); } catch { /* no report */ }
    const status = report ? Object.fromEntries(report.results.map((x) => [path.basename(x.input), x.status])) : null;
    const done = status ? names.filter((n) => status[n] === 'done') : [];
    if (sigs.length === 1) {
      if (!report) problems.push(`${label}: no report`);
      else {
        if (!report.interrupted) problems.push(`${label}: report.interrupted is false`);
        if (names.some((n) => !['done', 'interrupted'].includes(status[n]))) problems.push(`${label}: statuses ${JSON.stringify(status)}`);
        if ([...present].sort().join() !== done.join()) problems.push(`${label}: outputs ${present.join(',')} but done ${done.join(',')}`);
      }
    }
    // --resume finishes the rest; every output then matches the uninterrupted run.
    const resumed = await launch(batch(['--resume', '--json']), { cwd: d, env }).done;
    let resumedStatus = {};
    try { resumedStatus = Object.fromEntries(JSON.parse(resumed.stdout).results.map((x) => [path.basename(x.input), x.status])); } catch { /* checked below */ }
    if (resumed.code !== 0) problems.push(`${label}: --resume exit ${exitOf(resumed)}: ${firstLine(resumed.stderr)}`);
    for (const n of names) {
      const wantStatus = present.includes(n) ? 'up-to-date' : 'done';
      if (resumedStatus[n] !== wantStatus) problems.push(`${label}: --resume gave ${n} ${resumedStatus[n]}, expected ${wantStatus}`);
      if ((await sha256(path.join(d, 'out', n))) !== expected[n]) { dataLost++; problems.push(`${label}: after --resume out/${n} differs from the uninterrupted run`); }
    }
    lines.push(`${label}: exit ${exitOf(res)}, ${present.length}/${names.length} written before the stop` +
      `${report ? `, report ${done.length} done + ${names.length - done.length} interrupted` : ', no report'}, temps ${temps.length}, ` +
      `resume ${names.filter((n) => resumedStatus[n] === 'up-to-date').length} up-to-date + ${names.filter((n) => resumedStatus[n] === 'done').length} done`);
    fs.rmSync(d, { recursive: true, force: true });
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const notes = `${lines.join('; ')}` + (problems.length ? `; problems: ${problems.slice(0, 4).join('; ')}` : '');
  ctx.log(`faults: CLI interrupted: ${notes}`);
  return row({
    scenario: 'CLI interrupted (SIGINT/SIGTERM)',
    load: `optimize over ${names.length} copies of ${fixture} (${(fs.statSync(src).size / 1e6).toFixed(1)} MB), stopped mid-batch, then --resume`,
    faults: signals, crashes, dataLost, ok: problems.length === 0, notes,
  });
}

// --- the scenario ----------------------------------------------------------

async function run(ctx) {
  const tf = library(ctx);
  const env = childEnv(ctx);
  const rows = [];
  // TORCHFOLD_FAULTS_ONLY=a,c runs only those scenarios (a save killed, b in-place killed, c disk full, d CLI stopped).
  const only = (process.env.TORCHFOLD_FAULTS_ONLY || 'a,b,c,d').split(',');
  const all = { a: saveKilled, b: inPlaceKilled, c: diskFull, d: cliInterrupted };
  for (const scenario of Object.keys(all).filter((k) => only.includes(k)).map((k) => all[k])) {
    try {
      rows.push(await scenario(ctx, tf, env));
    } catch (e) {
      rows.push(row({ scenario: scenario.name, ok: false, notes: `the scenario itself failed: ${e && e.message}` }));
    }
  }
  return rows;
}

// --- children --------------------------------------------------------------

/**
 * writer: loads `src` and fuses it. With `refs`, saves the module as loaded to
 * refs[0] and the fused one to refs[1] and prints the times. Otherwise saves
 * to `target` forever, fused then as-loaded then fused…, printing
 * "begin N" before and "saved N MS" after each save; exits when stdin closes.
 */
async function writerChild(o) {
  const tf = require(o.dist);
  const m = await tf.load(o.src);
  const { module: fused } = await m.fuse();
  if (o.refs) {
    const saveMs = [];
    for (const [mod, file] of [[m, o.refs[0]], [fused, o.refs[1]]]) {
      const t = performance.now();
      await mod.save(file);
      saveMs.push(performance.now() - t);
    }
    process.stdout.write(`${JSON.stringify({ saveMs })}\n`);
    return;
  }
  process.stdin.on('end', () => process.exit(0)).on('error', () => process.exit(0)).resume();
  process.stdout.write('ready\n');
  for (let i = 0; i < 100000; i++) {
    process.stdout.write(`begin ${i}\n`);
    const t = performance.now();
    await (i % 2 === 0 ? fused : m).save(o.target);
    process.stdout.write(`saved ${i} ${(performance.now() - t).toFixed(1)}\n`);
  }
}

/** save: one save attempt of `src` to `target`; prints what happened. */
async function saveChild(o) {
  const tf = require(o.dist);
  const m = await tf.load(o.src);
  try {
    await m.save(o.target);
    process.stdout.write(`${JSON.stringify({ outcome: 'saved' })}\n`);
  } catch (e) {
    process.stdout.write(`${JSON.stringify({ outcome: 'rejected', name: e.name, code: e.code ?? null, message: e.message,
      isTorchfoldError: e instanceof tf.TorchfoldError })}\n`);
  }
}

function freeBytes(dir) {
  try { const s = fs.statfsSync(dir); return s.bavail * s.bsize; } catch { return null; }
}

/**
 * diskfull: runs where `dir` is the small filesystem (or under the file size
 * limit). Every risky write happens in a grandchild, so a crash is observed,
 * not suffered. Prints one JSON object of facts.
 */
async function diskFullChild(o) {
  const tf = require(o.dist);
  const env = { ...process.env };
  const fixtures = path.join(o.root, 'test', 'fixtures');
  const big = path.join(fixtures, 'mobilenet_v2_traced.pt');
  const small = path.join(fixtures, 'convbn_scripted.pt');
  const demo = path.join(o.root, 'models', 'demo.pt');
  const target = path.join(o.dir, 'model.pt');
  const clear = () => { for (const n of fs.readdirSync(o.dir)) fs.rmSync(path.join(o.dir, n), { recursive: true, force: true }); };
  const attempt = async (name, oldFile, srcFile, prepare) => {
    clear();
    fs.copyFileSync(oldFile, target);
    const oldSha = await sha256(target);
    if (prepare) {
      const why = prepare();
      if (why) return { name, skipped: why };
    }
    const freeBefore = freeBytes(o.dir);
    const res = await launch([SELF, '--child', 'save', JSON.stringify({ dist: o.dist, src: srcFile, target })], { env }).done;
    const said = lastJson(res.stdout);
    const temps = temporaries(o.dir);
    const freeAfter = freeBytes(o.dir);
    const after = {
      name, exit: exitOf(res), outcome: said ? said.outcome : 'died', code: said?.code ?? null, message: said?.message ?? null,
      isTorchfoldError: Boolean(said?.isTorchfoldError), stderr: firstLine(res.stderr),
      intact: (await sha256(target)) === oldSha, oldLoads: await loads(tf, target), temps,
      freeLostBytes: o.strategy === 'rlimit' || freeBefore === null ? null : freeBefore - freeAfter,
    };
    return after;
  };
  const saves = [];
  // 1. A 14.5 MB model over a 374 KB one on an 8 MiB filesystem: fails mid-stream.
  saves.push(await attempt(`save 14.5 MB over 374 KB`, demo, big));
  // 2. Free space one page short of the new file: fails at the end (the zip's central directory).
  const refDir = path.join(o.outside, 'size');
  fs.mkdirSync(refDir, { recursive: true });
  const dm = await tf.load(demo);
  await dm.save(path.join(refDir, 'model.pt'));
  await dm.dispose();
  const need = fs.statSync(path.join(refDir, 'model.pt')).size;
  saves.push(await attempt(`save ${Math.round(need / 1024)} KB with one page too few free`, small, demo, () => {
    if (o.strategy === 'rlimit') return 'needs a real filesystem';
    const page = 4096;
    const fill = freeBytes(o.dir) - (Math.ceil(need / page) - 1) * page;
    if (fill <= 0) return 'filesystem too small';
    fs.writeFileSync(path.join(o.dir, 'filler'), Buffer.alloc(fill));
    return null;
  }));
  // 3. The CLI: a batch whose first output does not fit and whose second does.
  clear();
  const inDir = path.join(o.outside, 'in');  // a.pt: the 14.5 MB model, b.pt: a 24 KB one
  const reportFile = path.join(o.outside, 'report.json');
  const out = path.join(o.dir, 'out');
  const res = await launch([path.join(o.dist, 'cli', 'main.js'), 'optimize', inDir, '--out-dir', out, '--report', reportFile, '--quiet'],
    { env, cwd: o.outside }).done;
  let report = null;
  try { report = JSON.parse(fs.readFileSync(reportFile, 'utf8')); } catch { /* not written */ }
  const outputs = [];
  for (const f of tree(out).filter((f) => !f.endsWith('/') && !f.includes('.tmp-'))) {
    const file = path.join(out, f);
    let provenance = null;
    try { provenance = (await tf.readExtraFiles(file, ['torchfold.json']))['torchfold.json'] ?? null; } catch { /* incomplete */ }
    outputs.push({ name: f, complete: (await loads(tf, file)) === true && Boolean(provenance) });
  }
  const cli = {
    exit: exitOf(res), stdout: res.stdout.slice(-2000), stderr: firstLine(res.stderr), report, outputs,
    temps: tree(o.dir).filter((f) => f.includes('.tmp-')),
  };
  clear();
  process.stdout.write(`${JSON.stringify({ strategy: o.strategy, limit: o.limit, saves, cli })}\n`);
}

if (require.main === module && process.argv[2] === '--child') {
  const modes = { writer: writerChild, save: saveChild, diskfull: diskFullChild };
  const o = JSON.parse(process.argv[4]);
  modes[process.argv[3]](o).catch((e) => {
    process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
    process.exit(70);
  });
}

module.exports = { name: 'faults', run, diskFullProbe, smallFsStrategy };
