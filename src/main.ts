#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Config } from './config.ts';
import { DaemonError, isDaemonError } from './errors.ts';
import type { RedisClient } from './redis/scripts.ts';
import type { StoreContext } from './store/context.ts';
import type { DeadFilter } from './store/dead-letters.ts';

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
 * The command line, and the only module that touches `process`: arguments, environment,
 * signals and exit codes (0 clean stop, 78 invalid configuration or arguments, 1 fatal).
 */
const EXIT_OK = 0;
const EXIT_FATAL = 1;
const EXIT_CONFIG = 78;

const usage = `Usage: letta-run-watcher [command] [options]

Commands:
  run                      the daemon (the default); stops cleanly on SIGTERM/SIGINT
  enqueue RUN_ID... [--webhook URL] [--metadata JSON] [--max-watch-ms N]
                           push runs onto the intake list (checked by the intake's own rules first)
  status [--json]          intake depth, runs watched, due now, webhook backlog, dead letters,
                           endpoints failing
  dead list|replay|purge   inspect and replay dead letters (see 'dead --help')
  simulate [--port N]      a local Letta-compatible API with simulated runs (see 'simulate --help')

Options:
  --help, -h               this text
  --version, -v            the version

Configuration comes from config/default.json, the JSON file named by WATCHER_CONFIG, and the
environment (LETTA_BASE_URL, LETTA_API_KEY, REDIS_URL or REDIS_CLUSTER_NODES or REDIS_SENTINELS,
WATCHER_*); see docs/configuration.md.
`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const [command = 'run', ...rest] = argv;
  // Short commands: a signal simply interrupts them.
  if (command !== 'run' && command !== 'simulate') onSignals(() => process.exit(130));
  if (command === '--help' || command === '-h' || command === 'help') return print(usage);
  if (command === '--version' || command === '-v') return print(version());
  switch (command) {
    case 'run':
      if (rest.includes('--help') || rest.includes('-h')) return print(usage);
      if (rest.length > 0) throw new DaemonError('ERR_USAGE', `run takes no arguments, got ${JSON.stringify(rest.join(' '))}`);
      return await runDaemon((await import('./config.ts')).loadConfig({ env: process.env }));
    case 'enqueue':
      return await enqueue(rest);
    case 'status':
      return await status(rest);
    case 'dead':
      return await dead(rest);
    case 'simulate':
      return await simulate(rest);
    default:
      throw new DaemonError('ERR_USAGE', `unknown command ${JSON.stringify(command)}; see --help`);
  }
}

function print(text: string): number {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  return EXIT_OK;
}

async function runDaemon(config: Config): Promise<number> {
  const [{ makeLogger }, { Daemon }, { redactUrl }] = await Promise.all([import('./log.ts'), import('./daemon.ts'), import('./redact.ts')]);
  const log = makeLogger(config.log.level, { pretty: process.stdout.isTTY === true });
  const daemon = new Daemon({ config, log });
  const started = daemon.start();
  let signals = 0;
  const done = new Promise<number>((resolve) => {
    onSignals((signal) => {
      signals++;
      if (signals > 1) {
        log.warn({ signal }, 'second signal: exiting without draining');
        process.exit(EXIT_FATAL);
      }
      log.info({ signal }, 'stopping: draining in-flight polls');
      // A stop during start-up ends it (the daemon starts nothing after a stop).
      daemon
        .stop()
        .then(
          () => resolve(EXIT_OK),
          (err: unknown) => {
            log.error({ err }, 'error while stopping');
            resolve(EXIT_FATAL);
          },
        );
    });
  });
  try {
    await started;
  } catch (err) {
    // Stopped while starting (waiting for Redis, say): a clean stop all the same.
    if (isDaemonError(err, 'ERR_STOPPED')) return await done;
    throw err;
  }
  log.info(
    {
      letta: redactUrl(config.letta.baseUrl),
      prefix: config.redis.keyPrefix,
      partitions: config.redis.partitions,
      concurrency: config.poll.concurrency,
      max_rps: config.poll.maxRps,
      webhook_targets: config.webhooks.urls.length + config.webhooks.targets.length,
    },
    'letta-run-watcher running',
  );
  const code = await done;
  log.flush();
  return code;
}

/** A short-lived connection for CLI commands (fail fast), and the store on it. */
async function cliStore(config: Config): Promise<{ ctx: StoreContext; close(): void }> {
  const [{ connectRedis }, { defineScripts }, { layoutFor }] = await Promise.all([import('./redis/connection.ts'), import('./redis/scripts.ts'), import('./redis/keys.ts')]);
  const client: RedisClient = connectRedis(config, { kind: 'cli' }, 'letta-run-watcher-cli');
  const ctx: StoreContext = { client, scripts: defineScripts(client), layout: layoutFor(config.redis.keyPrefix, config.redis.partitions), replica: `cli-${process.pid}` };
  return { ctx, close: () => client.disconnect() };
}

/**
 * The entry a producer would push: a bare ID when there is nothing else to say, JSON
 * otherwise. Whether it is valid is the intake rules' to say (see enqueue).
 */
function buildEntry(runId: string, o: { webhookUrl?: string | undefined; metadata?: unknown; maxWatchMs?: number | undefined }): string {
  if (o.webhookUrl === undefined && o.metadata === undefined && o.maxWatchMs === undefined) return runId;
  return JSON.stringify({
    run_id: runId,
    ...(o.webhookUrl === undefined ? {} : { webhook_url: o.webhookUrl }),
    ...(o.metadata === undefined ? {} : { metadata: o.metadata }),
    ...(o.maxWatchMs === undefined ? {} : { max_watch_ms: o.maxWatchMs }),
  });
}

async function enqueue(args: string[]): Promise<number> {
  const [{ loadConfig, intakeLimits }, { makeIntakeStore }] = await Promise.all([import('./config.ts'), import('./store/intake.ts')]);
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      webhook: { type: 'string' },
      metadata: { type: 'string' },
      'max-watch-ms': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return print(usage);
  if (positionals.length === 0) throw new DaemonError('ERR_USAGE', 'enqueue needs at least one RUN_ID');
  let metadata: unknown;
  if (values.metadata !== undefined) {
    try {
      metadata = JSON.parse(values.metadata);
    } catch {
      throw new DaemonError('ERR_USAGE', `--metadata is not valid JSON: ${JSON.stringify(values.metadata.slice(0, 200))}`);
    }
  }
  const rawMax = values['max-watch-ms'];
  if (rawMax !== undefined && !/^\d+$/.test(rawMax)) throw new DaemonError('ERR_USAGE', `--max-watch-ms ${JSON.stringify(rawMax)} is not a whole number of milliseconds`);
  const maxWatchMs = rawMax === undefined ? undefined : Number(rawMax);
  const entries = positionals.map((id) => buildEntry(id, { webhookUrl: values.webhook, metadata, maxWatchMs }));
  const config = loadConfig({ env: process.env });
  const { ctx, close } = await cliStore(config);
  try {
    // The intake's own rules, run by Redis (lua/check-entries.lua): what passes here is what
    // the daemon accepts, and what fails names the same reason it would dead-letter.
    const store = makeIntakeStore(ctx, intakeLimits(config));
    const reasons = await store.check(entries);
    const bad = reasons.flatMap((reason, i) => (reason === '' ? [] : [`  ${positionals[i]}: ${reason}`]));
    if (bad.length > 0) throw new DaemonError('ERR_USAGE', `nothing enqueued; the intake would refuse:\n${bad.join('\n')}`);
    await ctx.client.lpush(ctx.layout.intake, ...entries);
  } finally {
    close();
  }
  process.stdout.write(`enqueued ${entries.length} run${entries.length === 1 ? '' : 's'}\n`);
  return EXIT_OK;
}

async function status(args: string[]): Promise<number> {
  const [{ loadConfig }, { readStatus }] = await Promise.all([import('./config.ts'), import('./store/status.ts')]);
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) return print(usage);
  const config = loadConfig({ env: process.env });
  const { ctx, close } = await cliStore(config);
  let s;
  try {
    s = await readStatus(ctx);
  } finally {
    close();
  }
  if (values.json) return print(JSON.stringify(s));
  const rows: [string, number | string][] = [
    ['intake depth', s.intake],
    ['runs watched', s.watched],
    ['due now', s.due_now],
    ['webhook backlog', s.webhook_backlog],
    ['dead letters', s.dead_letters],
    ['events in stream', s.events],
    ['partitions', s.partitions],
    ['event streams', s.event_streams.join(' ')],
    ['ops stream', s.ops_stream],
    ['endpoints failing', s.endpoints_failing],
  ];
  return print(rows.map(([k, v]) => `${k.padEnd(18)}${v}`).join('\n'));
}

/** An unambiguous time: ISO 8601 with a zone, or a date (midnight UTC). */
function isoTime(flag: string, v: string): number {
  const iso = /^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2}))?$/;
  const at = iso.test(v) ? Date.parse(v) : Number.NaN;
  if (Number.isNaN(at)) {
    throw new DaemonError('ERR_USAGE', `--${flag} ${JSON.stringify(v)} is not a time: use ISO 8601 with a zone (2026-11-28T10:00:00Z) or a date (2026-11-28, midnight UTC)`);
  }
  return at;
}

const deadUsage = `Usage: letta-run-watcher dead list [--json] [--limit N]
       letta-run-watcher dead replay (--all | --index N... | --since ISO_TIME)
       letta-run-watcher dead purge (--all | --index N... | --before ISO_TIME)

Index 0 is the newest dead letter, as 'dead list' shows. Replay puts a webhook delivery back
in the outbox (re-enabling an endpoint that answered 410) and runs an intake entry through the
intake rules again; an entry cut to 1 KiB when it was rejected cannot be replayed and is left.
Times are ISO 8601 with a zone (2026-11-28T10:00:00Z) or a date (2026-11-28, midnight UTC).
`;

async function dead(args: string[]): Promise<number> {
  const [{ loadConfig, intakeLimits }, { listDeadLetters, purgeDeadLetters, replayDeadLetters, selectDeadLetters }] = await Promise.all([
    import('./config.ts'),
    import('./store/dead-letters.ts'),
  ]);
  const [sub, ...rest] = args;
  if (sub === undefined || sub === '--help' || sub === '-h') return print(deadUsage);
  const { values } = parseArgs({
    args: rest,
    options: {
      json: { type: 'boolean' },
      limit: { type: 'string' },
      all: { type: 'boolean' },
      index: { type: 'string', multiple: true },
      since: { type: 'string' },
      before: { type: 'string' },
    },
  });
  const indexes = (values.index ?? []).map((v) => {
    if (!/^\d+$/.test(v)) throw new DaemonError('ERR_USAGE', `--index ${JSON.stringify(v)} is not a whole number`);
    return Number(v);
  });
  const limit = values.limit === undefined ? 1000 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new DaemonError('ERR_USAGE', `--limit ${JSON.stringify(values.limit)} is not a positive whole number`);
  const filter: DeadFilter = {
    ...(values.all ? { all: true } : {}),
    indexes,
    ...(values.since === undefined ? {} : { since: isoTime('since', values.since) }),
    ...(values.before === undefined ? {} : { before: isoTime('before', values.before) }),
  };
  if (sub !== 'list' && sub !== 'replay' && sub !== 'purge') throw new DaemonError('ERR_USAGE', `unknown dead command ${JSON.stringify(sub)}; use list, replay or purge`);
  if (sub !== 'list' && !values.all && indexes.length === 0 && values.since === undefined && values.before === undefined) {
    throw new DaemonError('ERR_USAGE', `dead ${sub} needs --all, --index N, or a time (--since / --before)`);
  }
  const config = loadConfig({ env: process.env });
  const { ctx, close } = await cliStore(config);
  try {
    const list = await listDeadLetters(ctx, sub === 'list' ? limit : 1_000_000);
    if (sub === 'list') {
      if (values.json) return print(JSON.stringify(list.map(({ raw: _raw, ...d }) => d)));
      if (list.length === 0) return print('no dead letters');
      const many = config.redis.partitions > 1;
      return print(
        list
          .map((d) => `${String(d.index).padStart(4)}  ${many ? `p${d.partition}  ` : ''}${d.at.padEnd(24)}  ${d.kind.padEnd(8)}  ${d.reason}`)
          .join('\n'),
      );
    }
    const chosen = selectDeadLetters(list, filter);
    if (sub === 'purge') return print(`purged ${await purgeDeadLetters(ctx, chosen)} dead letters`);
    const r = await replayDeadLetters(ctx, intakeLimits(config), chosen);
    for (const d of r.skipped) process.stderr.write(`not replayable: #${d.index} ${d.kind} (${d.truncated ? 'entry was cut when stored' : 'unreadable'})\n`);
    return print(`replayed ${r.replayed} dead letters${r.gone ? ` (${r.gone} already taken by another process)` : ''}`);
  } finally {
    close();
  }
}

async function simulate(args: string[]): Promise<number> {
  const [{ parseSimulatorArgs, simulatorUsage }, { startSimulator }] = await Promise.all([import('./simulator/args.ts'), import('./simulator/server.ts')]);
  if (args.includes('--help') || args.includes('-h')) return print(`${simulatorUsage}  --feed-every-ms N       Also create a run every N ms and push it onto the watcher's intake list
                         (REDIS_URL, WATCHER_KEY_PREFIX), so a compose stack shows events flowing
`);
  const at = args.indexOf('--feed-every-ms');
  let feedMs: number | undefined;
  if (at >= 0) {
    const raw = args[at + 1] ?? '';
    if (!/^\d+$/.test(raw) || Number(raw) < 10) throw new DaemonError('ERR_USAGE', `--feed-every-ms: expected a whole number ≥ 10, got ${JSON.stringify(raw)}`);
    feedMs = Number(raw);
    args = [...args.slice(0, at), ...args.slice(at + 2)];
  }
  const sim = await startSimulator(parseSimulatorArgs(args, process.env));
  process.stdout.write(`Letta simulator listening on ${sim.url}\n`);
  let feeder: NodeJS.Timeout | undefined;
  let redis: RedisClient | undefined;
  if (feedMs !== undefined) {
    const [{ loadConfig }, { layoutFor }, { connectRedis }] = await Promise.all([import('./config.ts'), import('./redis/keys.ts'), import('./redis/connection.ts')]);
    const config = loadConfig({ env: process.env });
    const intake = layoutFor(config.redis.keyPrefix, config.redis.partitions).intake;
    const r = connectRedis(config, { kind: 'daemon' }, 'letta-run-watcher-simulator');
    redis = r;
    feeder = setInterval(() => {
      const run = sim.createRun();
      r.lpush(intake, run.id).catch(() => {});
    }, feedMs);
    process.stdout.write(`feeding a run every ${feedMs} ms into ${intake}\n`);
  }
  await new Promise<void>((resolve) => onSignals(() => resolve()));
  clearInterval(feeder);
  redis?.disconnect();
  await sim.close();
  return EXIT_OK;
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
setTimeout(() => process.exit(), 2000).unref();
