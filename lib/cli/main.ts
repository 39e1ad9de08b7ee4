#!/usr/bin/env node
/**
 * The `torchfold` command: optimize folders of checkpoints, inspect a model,
 * benchmark the transforms. Exit codes: 0 all done, 1 some inputs failed,
 * 2 usage error, 130/143 stopped by SIGINT/SIGTERM.
 */
// libuv's pool runs every load, fuse and save; give --jobs enough threads
// before anything uses the pool.
if (!process.env.UV_THREADPOOL_SIZE) {
  let jobs = 1;
  process.argv.forEach((a, i) => {
    const m = /^(?:--jobs=|-j)(\d+)$/.exec(a);
    if (m) jobs = Number(m[1]);
    else if ((a === '--jobs' || a === '-j') && /^\d+$/.test(process.argv[i + 1] ?? '')) jobs = Number(process.argv[i + 1]);
  });
  process.env.UV_THREADPOOL_SIZE = String(Math.min(64, Math.max(4, jobs + 2)));
}

import { Command, CommanderError, Option } from 'commander';
import { TorchfoldError } from '../errors';
import { versions } from '../runtime';
import { BenchFlags, benchCommand, VARIANTS, Variant } from './bench';
import { InspectFlags, inspectCommand } from './inspect';
import { DEFAULT_GLOB } from './inputs';
import { Io, optimizeCommand, OptimizeFlags } from './optimize';
import { INPUT_DTYPES, parseDevice, parseDtype, parseGroup, parseInteger, parseNonNegative, parseShape, parseSize, UsageError } from './usage';

const collect = <T>(parse: (v: string) => T) => (v: string, prev: T[] | undefined): T[] => [...(prev ?? []), parse(v)];
const wrap = <T>(parse: (v: string) => T) => (v: string): T => parse(v);

function packageVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- package.json is outside tsconfig's rootDir: no import
  try { return versions.torchfold; } catch { return (require('../../package.json') as { version: string }).version; }
}

function shapeOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--input-shape <dims>', 'shape of a sample input, e.g. 1,3,224,224 (repeat for a model with several inputs)')
      .argParser(collect((v) => parseShape(v))))
    .addOption(new Option('--input-dtype <dtype>', `dtype of the sample inputs: ${INPUT_DTYPES.join(', ')} (default float32; one for all, or one per --input-shape)`)
      .argParser(collect(parseDtype)));
}

function safetyOptions(cmd: Command): Command {
  return cmd
    .option('--verify', "check every record of each input against its CRC-32 before loading (PyTorch's reader does not): " +
      'a damaged file fails with ERR_FILE_CORRUPT instead of loading with other weights')
    .option('--isolate', 'open each input in a child process first, so a file that crashes libtorch fails with ' +
      'ERR_FILE_CORRUPT instead of taking this process down (about half a second per input)');
}

function analysisOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--mode <mode>', "'fold' removes BatchNorm; 'tune' keeps it trainable and folds on the fly in eval").choices(['fold', 'tune']).default('fold'))
    .option('--constants', 'also absorb mul/div/add/sub by constants after a conv/linear')
    .addOption(new Option('--modules <conv,bn[,act]>', 'fold exactly this group of module paths (repeatable); nothing else folds')
      .argParser(collect(parseGroup)))
    .option('--treat-training-as-eval', 'fold BatchNorms of a model saved in training mode, using their running statistics')
    .addOption(new Option('--device <device>', 'cpu, cuda or cuda:N').default('cpu').argParser(wrap(parseDevice)));
}

export function buildProgram(io: Io, setCode: (code: number) => void): Command {
  const program = new Command('torchfold')
    .description('Fold conv -> BatchNorm pairs of TorchScript models exactly, from Node.js (libtorch).')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride();

  const optimize = program.command('optimize')
    .summary('fuse conv -> BatchNorm in checkpoints: files, folders or globs')
    .description('Folds every foldable conv -> BatchNorm pair of each TorchScript checkpoint and writes the result, ' +
      'with a report of what was folded, what was left and why. Inputs are files, folders (searched recursively) or globs. ' +
      'Inputs are never modified unless --in-place; every output is written atomically, and carries extra/torchfold.json ' +
      '(input sha256, options) so --resume can skip finished work.')
    .argument('<inputs...>', 'TorchScript files, folders or globs')
    .option('-o, --output <file>', 'where to write, for a single input')
    .option('--out-dir <dir>', 'write outputs here, mirroring the input folders')
    .option('--in-place', 'replace each input (atomically), keeping a copy as NAME.pt.bak (or NAME.pt.bak.N: backups are never overwritten)')
    .option('--no-backup', 'with --in-place: keep no .bak copy')
    .option('--glob <pattern>', 'which files in folders are inputs', DEFAULT_GLOB);
  safetyOptions(analysisOptions(optimize))
    .option('--optimize', 'also try freezing and libtorch inference passes; keep the fastest valid candidate (needs --input-shape)')
    .addOption(new Option('--threads <n>', 'libtorch intra-op threads').argParser((v) => parseInteger(v, '--threads', 1, 1024)));
  shapeOptions(optimize)
    .option('--validate', 'compare outputs with the input model on the sample inputs; fail an input over the tolerance')
    .addOption(new Option('--atol <x>', 'absolute tolerance for --validate (default 1e-4; 1e-2 for float16/bfloat16 outputs)').argParser((v) => parseNonNegative(v, '--atol')))
    .addOption(new Option('--rtol <x>', 'relative tolerance for --validate (default 1e-3; 1e-2 for float16/bfloat16 outputs)').argParser((v) => parseNonNegative(v, '--rtol')))
    .option('--unfold-on-failure', 'with --validate: leave the pairs responsible unfolded instead of failing the input')
    .addOption(new Option('--bench <n>', 'time n interleaved runs before and after').argParser((v) => parseInteger(v, '--bench', 1)))
    .option('--dry-run', 'analyze and report only; write nothing')
    .addOption(new Option('-j, --jobs <n>', 'checkpoints optimized at once; a job starts only while the estimated memory of running jobs ' +
      '(3x the checkpoint size, 6x with --optimize, +64 MiB each) fits in --max-memory').default(1).argParser((v) => parseInteger(v, '--jobs', 1, 64)))
    .addOption(new Option('--max-memory <size>', 'memory budget for --jobs, e.g. 8G (default: 80% of free memory or the cgroup limit)')
      .argParser((v) => parseSize(v, '--max-memory')))
    .option('--shard <i/n>', 'take the i-th of n deterministic shares of the inputs (1 <= i <= n)')
    .option('--resume', 'skip inputs whose output exists and was made from the same input bytes with the same options')
    .option('--json', 'print the report as JSON on stdout (people-facing output goes to stderr)')
    .option('--report <file.json>', 'write the JSON report here (schema: schema/optimize-report.schema.json)')
    .option('--report-html <file.html>', 'write a self-contained HTML page: the table and a latency chart')
    .option('-q, --quiet', 'one line per input, no progress bar, no table')
    .option('-v, --verbose', 'one line per input with every pair, then the table')
    .addHelpText('after', `
Examples:
  $ torchfold optimize model.pt --output model.fused.pt
  $ torchfold optimize checkpoints/ --out-dir fused/ --report run.json --report-html run.html
  $ torchfold optimize 'runs/**/*.pt' --validate --input-shape 1,3,224,224 --bench 30
  $ torchfold optimize models/ --in-place --resume --jobs 2
  $ torchfold optimize models/ --out-dir fused/ --shard 2/4       # the 2nd of 4 machines
  $ torchfold optimize model.pt --modules conv1,bn1,relu --dry-run --json

Exit codes: 0 all done, 1 some inputs failed (validation included), 2 usage error,
130 stopped by Ctrl-C (143 by SIGTERM): finished outputs are kept, none is partial.`)
    .action(async (inputs: string[], flags: OptimizeFlags) => {
      const color = Boolean(io.stdout.isTTY) && !process.env.NO_COLOR;
      setCode(await optimizeCommand(inputs, { ...flags, color }, io, process.argv.slice(2)));
    });

  const inspect = program.command('inspect')
    .summary('methods, module tree and the conv -> BatchNorm pairs of a model')
    .description('Shows the methods, parameter count and bytes, BatchNorm count and the module tree with the pairs found: ' +
      'which would fold and why the others would not. Writes nothing unless --dot.')
    .argument('<model>', 'a TorchScript file');
  safetyOptions(analysisOptions(inspect))
    .option('--method <name>', 'the method whose graph --dot draws', 'forward')
    .addOption(new Option('--input-shape <dims>', 'propagate shapes into the graph from this input shape (repeatable)')
      .argParser(collect((v) => parseShape(v))))
    .option('--json', 'print JSON instead of text')
    .option('--dot <file>', "write Graphviz DOT of the method with the pairs highlighted ('-' for stdout)")
    .addHelpText('after', `
Examples:
  $ torchfold inspect model.pt
  $ torchfold inspect model.pt --json
  $ torchfold inspect model.pt --dot model.dot && dot -Tsvg model.dot > model.svg`)
    .action(async (model: string, flags: InspectFlags) => { setCode(await inspectCommand(model, flags, io)); });

  const bench = program.command('bench')
    .summary('latency as loaded vs fold, tune and optimize, side by side')
    .description('Times the model as loaded against each transform on the same seeded inputs, interleaved in rounds ' +
      'after a warm-up, in one run; prints median/p10/p90, speedup against the loaded model, the error each ' +
      'transform adds and the thread count.')
    .argument('<model>', 'a TorchScript file');
  safetyOptions(shapeOptions(bench))
    .addOption(new Option('-n, --iterations <n>', 'timed rounds').default(30).argParser((v) => parseInteger(v, '--iterations', 1)))
    .addOption(new Option('--warmup <n>', 'untimed rounds first').default(5).argParser((v) => parseInteger(v, '--warmup', 0)))
    .addOption(new Option('--threads <n>', 'libtorch intra-op threads').argParser((v) => parseInteger(v, '--threads', 1, 1024)))
    .addOption(new Option('--device <device>', 'cpu, cuda or cuda:N').default('cpu').argParser(wrap(parseDevice)))
    .addOption(new Option('--variants <list>', `comma-separated subset of ${VARIANTS.join(',')}`).argParser((v) => {
      const list = v.split(',').map((s) => s.trim());
      const bad = list.filter((s) => !(VARIANTS as readonly string[]).includes(s));
      if (bad.length || !list.length) throw new UsageError(`--variants takes names from ${VARIANTS.join(', ')}; got '${v}'`);
      return list as Variant[];
    }))
    .option('--treat-training-as-eval', 'fold BatchNorms of a model saved in training mode')
    .option('--json', 'print JSON instead of a table')
    .addHelpText('after', `
Examples:
  $ torchfold bench model.pt --input-shape 1,3,224,224
  $ torchfold bench model.pt --input-shape 8,3,224,224 --threads 2 -n 50 --json`)
    .action(async (model: string, flags: BenchFlags) => { setCode(await benchCommand(model, flags, io)); });

  // Parser errors thrown by argParser become commander's usage errors (exit 2).
  for (const cmd of [program, optimize, inspect, bench]) cmd.exitOverride();
  return program;
}

export async function main(argv: string[], io: Io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let code = 0;
  const program = buildProgram(io, (c) => { code = c; });
  try {
    if (argv.length === 0) {
      program.outputHelp();
      return 2;
    }
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help') return 0;
      return 2;
    }
    if (e instanceof UsageError) {
      io.stderr.write(`error: ${e.message}\n`);
      return 2;
    }
    if (e instanceof TorchfoldError) {
      io.stderr.write(`error: ${e.code}: ${e.message}\n`);
      return e.code === 'ERR_INVALID_ARG' ? 2 : 1;
    }
    if ((e as { code?: string }).code === 'ERR_INVALID_ARG') {
      io.stderr.write(`error: ${(e as Error).message}\n`);
      return 2;
    }
    throw e;
  }
}

if (require.main === module) {
  // `torchfold ... | head` closes the pipe early: stop quietly.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); else throw e; });
  }
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  }, (e: unknown) => {
    process.stderr.write(`torchfold: unexpected error: ${e instanceof Error ? e.stack : String(e)}\n`);
    process.exitCode = 70;
  });
}
