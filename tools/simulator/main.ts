/**
 * The Letta simulator on its own: `npm run simulate -- [options]` (or the image's `simulator`
 * target). It is a stand-in for Letta's REST API for demos, tests and benchmarks, and no part
 * of the daemon. `--feed-every-ms N` also creates a run every N ms and pushes it onto the
 * watcher's intake list (REDIS_URL, WATCHER_KEY_PREFIX), so a compose stack shows events
 * flowing.
 */
import { loadConfig } from '../../src/config.ts';
import { DaemonError, isDaemonError } from '../../src/errors.ts';
import { connectRedis } from '../../src/redis/connection.ts';
import { layoutFor } from '../../src/redis/keys.ts';
import { parseSimulatorArgs, simulatorUsage } from './args.ts';
import { startSimulator } from './server.ts';

const FEED_USAGE = `  --feed-every-ms N      Also create a run every N ms and push it onto the watcher's intake
                         list (REDIS_URL, WATCHER_KEY_PREFIX)
`;
/** Feeding faster than this would flood a demo's Redis. */
const MIN_FEED_MS = 10;
const EXIT_USAGE = 78;

async function main(argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(simulatorUsage + FEED_USAGE);
    return;
  }
  // --feed-every-ms is this entry's own; the rest are the simulator's.
  const at = argv.indexOf('--feed-every-ms');
  let feedMs: number | undefined;
  let args = argv;
  if (at >= 0) {
    const raw = argv[at + 1] ?? '';
    if (!/^\d+$/.test(raw) || Number(raw) < MIN_FEED_MS) {
      throw new DaemonError('ERR_USAGE', `--feed-every-ms: expected a whole number ≥ ${MIN_FEED_MS}, got ${JSON.stringify(raw)}`);
    }
    feedMs = Number(raw);
    args = [...argv.slice(0, at), ...argv.slice(at + 2)];
  }
  const sim = await startSimulator(parseSimulatorArgs(args, process.env));
  process.stdout.write(`Letta simulator listening on ${sim.url}\n`);

  let stopFeeding = () => {};
  if (feedMs !== undefined) {
    const config = loadConfig({ env: process.env });
    const intake = layoutFor(config.redis.keyPrefix, config.redis.partitions).intake;
    const redis = connectRedis(config, { kind: 'daemon' }, 'letta-run-watcher-simulator');
    const feeder = setInterval(() => void redis.lpush(intake, sim.createRun().id).catch(() => {}), feedMs);
    process.stdout.write(`feeding a run every ${feedMs} ms into ${intake}\n`);
    stopFeeding = () => {
      clearInterval(feeder);
      redis.disconnect();
    };
  }
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  stopFeeding();
  await sim.close();
}

try {
  await main(process.argv.slice(2));
} catch (err) {
  const usage = isDaemonError(err, 'ERR_USAGE') || isDaemonError(err, 'ERR_CONFIG') || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS');
  process.stderr.write(`letta-simulator: ${usage ? (err as Error).message : ((err as Error).stack ?? String(err))}\n`);
  process.exitCode = usage ? EXIT_USAGE : 1;
}
