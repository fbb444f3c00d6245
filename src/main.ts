#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { Redis } from 'ioredis';
import type { Config } from './config.ts';
import type { DeadFilter } from './dead.ts';
import { DaemonError, isDaemonError } from './errors.ts';

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
                           push runs onto the intake list
  status [--json]          intake depth, runs watched, due now, webhook backlog, dead letters
  dead list|replay|purge   inspect and replay dead letters (see 'dead --help')
  simulate [--port N]      a local Letta-compatible API with simulated runs (see 'simulate --help')

Options:
  --help, -h               this text
  --version, -v            the version

Configuration comes from config/default.json, the JSON file named by WATCHER_CONFIG, and the
environment (LETTA_BASE_URL, LETTA_API_KEY, REDIS_URL, WATCHER_*); see README.md.
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
  const [{ makeLogger }, { Daemon }] = await Promise.all([import('./log.ts'), import('./daemon.ts')]);
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
      // Stop only once start-up has finished, or the loops it starts would outlive the stop.
      started
        .then(() => daemon.stop())
        .then(
          () => resolve(EXIT_OK),
          (err: unknown) => {
            log.error({ err }, 'error while stopping');
            resolve(EXIT_FATAL);
          },
        );
    });
  });
  await started;
  log.info(
    {
      letta: config.letta.baseUrl,
      prefix: config.redis.keyPrefix,
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

/** A short-lived connection for CLI commands: fail fast instead of waiting for Redis. */
async function cliRedis(config: Config): Promise<Redis> {
  const { Redis } = await import('ioredis');
  const redis = new Redis(config.redis.url, { maxRetriesPerRequest: 1, connectTimeout: 5000, retryStrategy: () => null });
  redis.on('error', () => {});
  return redis;
}

async function enqueue(args: string[]): Promise<number> {
  const [{ loadConfig }, { buildEntry }, { keysFor }] = await Promise.all([import('./config.ts'), import('./intake.ts'), import('./schedule.ts')]);
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
  let metadata: Record<string, unknown> | undefined;
  if (values.metadata !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(values.metadata);
    } catch {
      throw new DaemonError('ERR_USAGE', `--metadata is not valid JSON: ${JSON.stringify(values.metadata)}`);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new DaemonError('ERR_USAGE', '--metadata must be a JSON object');
    }
    metadata = parsed as Record<string, unknown>;
  }
  const rawMax = values['max-watch-ms'];
  const maxWatchMs = rawMax === undefined ? undefined : /^\d+$/.test(rawMax) ? Number(rawMax) : Number.NaN;
  const entries = positionals.map((id) => buildEntry(id, { webhookUrl: values.webhook, metadata, maxWatchMs }));
  const config = loadConfig({ env: process.env });
  const redis = await cliRedis(config);
  try {
    await redis.lpush(keysFor(config.redis.keyPrefix).intake, ...entries);
  } finally {
    redis.disconnect();
  }
  process.stdout.write(`enqueued ${entries.length} run${entries.length === 1 ? '' : 's'}\n`);
  return EXIT_OK;
}

async function status(args: string[]): Promise<number> {
  const [{ loadConfig }, { keysFor }, { readStatus }] = await Promise.all([import('./config.ts'), import('./schedule.ts'), import('./status.ts')]);
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } });
  if (values.help) return print(usage);
  const config = loadConfig({ env: process.env });
  const redis = await cliRedis(config);
  let s;
  try {
    s = await readStatus(redis, keysFor(config.redis.keyPrefix));
  } finally {
    redis.disconnect();
  }
  if (values.json) return print(JSON.stringify(s));
  const rows: [string, number][] = [
    ['intake depth', s.intake],
    ['runs watched', s.watched],
    ['due now', s.due_now],
    ['webhook backlog', s.webhook_backlog],
    ['dead letters', s.dead_letters],
    ['events in stream', s.events],
  ];
  return print(rows.map(([k, v]) => `${k.padEnd(18)}${v}`).join('\n'));
}

const deadUsage = `Usage: letta-run-watcher dead list [--json] [--limit N]
       letta-run-watcher dead replay (--all | --index N... | --since ISO_TIME)
       letta-run-watcher dead purge (--all | --index N... | --before ISO_TIME)

Index 0 is the newest dead letter, as 'dead list' shows. Replay puts a webhook delivery back
in the outbox (re-enabling an endpoint that answered 410) and an intake entry back on the
intake list; an entry cut to 1 KiB when it was rejected cannot be replayed and is left.
`;

async function dead(args: string[]): Promise<number> {
  const [{ loadConfig }, { keysFor }, { listDead, purgeDead, replayDead, selectDead }] = await Promise.all([
    import('./config.ts'),
    import('./schedule.ts'),
    import('./dead.ts'),
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
  const time = (flag: string, v: string | undefined) => {
    if (v !== undefined && Number.isNaN(Date.parse(v))) throw new DaemonError('ERR_USAGE', `--${flag} ${JSON.stringify(v)} is not a time (use ISO 8601)`);
    return v;
  };
  const indexes = (values.index ?? []).map((v) => {
    if (!/^\d+$/.test(v)) throw new DaemonError('ERR_USAGE', `--index ${JSON.stringify(v)} is not a whole number`);
    return Number(v);
  });
  const limit = values.limit === undefined ? 1000 : Number(values.limit);
  if (!Number.isInteger(limit) || limit < 1) throw new DaemonError('ERR_USAGE', `--limit ${JSON.stringify(values.limit)} is not a positive whole number`);
  const filter: DeadFilter = {
    ...(values.all ? { all: true } : {}),
    indexes,
    ...(values.since === undefined ? {} : { since: time('since', values.since) as string }),
    ...(values.before === undefined ? {} : { before: time('before', values.before) as string }),
  };
  if (sub !== 'list' && sub !== 'replay' && sub !== 'purge') throw new DaemonError('ERR_USAGE', `unknown dead command ${JSON.stringify(sub)}; use list, replay or purge`);
  if (sub !== 'list' && !values.all && indexes.length === 0 && values.since === undefined && values.before === undefined) {
    throw new DaemonError('ERR_USAGE', `dead ${sub} needs --all, --index N, or a time (--since / --before)`);
  }
  const config = loadConfig({ env: process.env });
  const keys = keysFor(config.redis.keyPrefix);
  const redis = await cliRedis(config);
  try {
    const list = await listDead(redis, keys, sub === 'list' ? limit : 1_000_000);
    if (sub === 'list') {
      if (values.json) return print(JSON.stringify(list.map(({ raw: _raw, ...d }) => d)));
      if (list.length === 0) return print('no dead letters');
      return print(
        list
          .map((d) => `${String(d.index).padStart(4)}  ${d.at.padEnd(24)}  ${d.kind.padEnd(8)}  ${d.reason}`)
          .join('\n'),
      );
    }
    const chosen = selectDead(list, filter);
    if (sub === 'purge') return print(`purged ${await purgeDead(redis, keys, chosen)} dead letters`);
    const r = await replayDead(redis, config.redis.keyPrefix, keys, chosen);
    for (const d of r.skipped) process.stderr.write(`not replayable: #${d.index} ${d.kind} (${d.truncated ? 'entry was cut when stored' : 'unreadable'})\n`);
    return print(`replayed ${r.replayed} dead letters${r.gone ? ` (${r.gone} already taken by another process)` : ''}`);
  } finally {
    redis.disconnect();
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
  let redis: Redis | undefined;
  if (feedMs !== undefined) {
    const [{ loadConfig }, { keysFor }, { Redis }] = await Promise.all([import('./config.ts'), import('./schedule.ts'), import('ioredis')]);
    const config = loadConfig({ env: process.env });
    const intake = keysFor(config.redis.keyPrefix).intake;
    const r = new Redis(config.redis.url, { maxRetriesPerRequest: null });
    r.on('error', () => {});
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
