#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { EXIT_CONFIG, EXIT_FATAL, EXIT_INTERRUPTED, print } from './cli/output.ts';
import { DaemonError, isDaemonError } from './errors.ts';

/**
 * The daemon's heap is short-lived garbage; on a large host V8's defaults let RSS grow to
 * ~300 MB where these flags keep it near 150 MB (BENCHMARKS.md), and the last one saves ~16 %
 * of CPU per poll. V8 refuses them in NODE_OPTIONS, so `run` re-executes itself with them in
 * place (execve: the same process, no parent left holding memory), however it was started:
 * `node dist/main.js run`, `npx letta-run-watcher run`, or the image's ENTRYPOINT (which
 * passes them already). LETTA_WATCHER_NODE_FLAGS=off leaves Node's defaults.
 */
const NODE_FLAGS = ['--max-semi-space-size=8', '--heap-growing-percent=100', '--no-allocation-site-pretenuring'];
function execWithNodeFlags(): void {
  if ((process.argv[2] ?? 'run') !== 'run' || process.env['LETTA_WATCHER_NODE_FLAGS'] === 'off') return;
  const has = (flag: string) => process.execArgv.some((a) => a.split('=')[0] === flag.split('=')[0]);
  const missing = NODE_FLAGS.filter((f) => !has(f));
  if (missing.length === 0 || typeof process.execve !== 'function') return;
  process.execve(process.execPath, [process.execPath, ...process.execArgv, ...missing, ...process.argv.slice(1)], process.env);
}
execWithNodeFlags();

// A SIGTERM can arrive while the daemon is still loading (an orchestrator stopping a pod that
// just started). Hold it here, before the heavy modules load, and act on it once the daemon
// runs, so even then the stop is clean and exits 0.
const heldSignals: NodeJS.Signals[] = [];
const holdSignal = (signal: NodeJS.Signals) => heldSignals.push(signal);
process.on('SIGTERM', holdSignal);
process.on('SIGINT', holdSignal);

/** Replaces the holding handler with the command's own; signals held so far are replayed. */
function onSignals(handler: (signal: NodeJS.Signals) => void): void {
  // Add before removing: with no listener left for a moment, Node stops watching the signal
  // and drops one that is pending (sent while module loading kept the event loop busy).
  process.on('SIGTERM', handler);
  process.on('SIGINT', handler);
  process.off('SIGTERM', holdSignal);
  process.off('SIGINT', holdSignal);
  for (const s of heldSignals.splice(0)) handler(s);
}

/**
 * The command line (this file and cli/ are the only ones that touch `process`): which command
 * runs, and the exit code (0 clean stop, 78 invalid configuration or arguments, 1 fatal, 130
 * a short command interrupted). Each command's module loads only when it runs, so `status`
 * does not pay for the daemon's.
 */
const usage = `Usage: letta-run-watcher [command] [options]

Commands:
  run                      the daemon (the default); stops cleanly on SIGTERM/SIGINT
  enqueue RUN_ID... [--webhook URL] [--metadata JSON] [--max-watch-ms N]
                           push runs onto the intake list (checked by the intake's own rules first)
  status [--json]          intake depth, runs watched, due now, webhook backlog, dead letters,
                           endpoints failing
  dead list|replay|purge   inspect and replay dead letters (see 'dead --help')

Options:
  --help, -h               this text
  --version, -v            the version

Configuration comes from config/default.json, the JSON file named by WATCHER_CONFIG, and the
environment (LETTA_BASE_URL, LETTA_API_KEY, REDIS_URL or REDIS_CLUSTER_NODES or REDIS_SENTINELS,
WATCHER_*); see docs/configuration.md. The Letta simulator for trying it out is
\`npm run simulate\` (tools/simulator, not part of the daemon).
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [command = 'run', ...rest] = argv;
  // Short commands: a signal simply interrupts them.
  if (command !== 'run') onSignals(() => process.exit(EXIT_INTERRUPTED));
  if (command === '--help' || command === '-h' || command === 'help') return print(usage);
  if (command === '--version' || command === '-v') return print(version());
  switch (command) {
    case 'run': {
      if (rest.includes('--help') || rest.includes('-h')) return print(usage);
      if (rest.length > 0) throw new DaemonError('ERR_USAGE', `run takes no arguments, got ${JSON.stringify(rest.join(' '))}`);
      const [{ loadConfig }, { runDaemon }] = await Promise.all([import('./config.ts'), import('./cli/run.ts')]);
      return await runDaemon(loadConfig({ env: process.env }), onSignals);
    }
    case 'enqueue':
      return await (await import('./cli/enqueue.ts')).enqueue(rest);
    case 'status':
      return await (await import('./cli/status.ts')).status(rest);
    case 'dead':
      return await (await import('./cli/dead.ts')).dead(rest);
    case 'simulate':
      throw new DaemonError('ERR_USAGE', 'the simulator is no longer part of the daemon: run `npm run simulate -- --port 8283` from a clone (tools/simulator), or the image built with --target simulator');
    default:
      throw new DaemonError('ERR_USAGE', `unknown command ${JSON.stringify(command)}; see --help`);
  }
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (isDaemonError(err, 'ERR_CONFIG') || isDaemonError(err, 'ERR_USAGE')) {
    process.stderr.write(`letta-run-watcher: ${err.message}\n`);
    process.exitCode = EXIT_CONFIG;
  } else if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`letta-run-watcher: ${(err as Error).message}\n`);
    process.exitCode = EXIT_CONFIG;
  } else {
    process.stderr.write(`letta-run-watcher: fatal: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = EXIT_FATAL;
  }
}
// A backstop: if some handle outlives the shutdown, still exit (the timer does not itself keep
// the process alive).
const EXIT_BACKSTOP_MS = 2000;
setTimeout(() => process.exit(), EXIT_BACKSTOP_MS).unref();
