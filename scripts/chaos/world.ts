import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { layoutFor } from '../../src/redis/keys.ts';
import { newSecret } from '../../test/kit/receiver.ts';
import { startRedisServer, type RedisServer } from '../../test/kit/redis-server.ts';
import { seeded } from '../../tools/simulator/prng.ts';
import { startSimulator, type Simulator } from '../../tools/simulator/server.ts';
import type { ChaosOptions } from './options.ts';
import { startFlakyReceiver, type FlakyReceiver } from './receiver.ts';
import { startTap, type Tap } from './tap.ts';

/** What to undo when the run is over, in the order it was set up (undone in reverse). */
export type Cleanups = (() => Promise<unknown> | unknown)[];

/** The keys of the one partition the replicas share, and the intake list. */
export type ChaosKeys = ReturnType<typeof chaosKeys>;

/** The world around the daemon: Redis, the Letta simulator behind its tap, the receiver. */
export interface World {
  redisServer: RedisServer;
  /** A client of our own, to enqueue runs and watch progress. */
  redis: Redis;
  apiKey: string;
  secret: string;
  sim: Simulator;
  tap: Tap;
  receiver: FlakyReceiver;
  prefix: string;
  keys: ChaosKeys;
  /** The environment every replica starts with. */
  env: Record<string, string>;
}

export async function startWorld(o: ChaosOptions, cleanups: Cleanups): Promise<World> {
  const redisServer = await startRedisServer({ appendOnly: true });
  cleanups.push(() => redisServer.destroy());
  const redis = new Redis(redisServer.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
  redis.on('error', () => {});
  cleanups.push(() => redis.disconnect());

  const apiKey = `sk-test-${randomBytes(16).toString('hex')}`;
  const secret = newSecret();
  const sim = await startSimulator({ port: 0, apiKey, random: seeded(o.seed ^ 0x5eed), faults: o.faults });
  cleanups.push(() => sim.close());
  const tap = await startTap(sim.url);
  cleanups.push(() => tap.close());
  const receiver = await startFlakyReceiver(secret, o);
  cleanups.push(() => receiver.rx.close());

  const prefix = `chaos-${randomBytes(4).toString('hex')}`;
  const configPath = writeWatcherConfig(o, receiver.rx.url, cleanups);
  const env = replicaEnv({ o, redisUrl: redisServer.url, prefix, lettaUrl: tap.url, apiKey, secret, configPath });
  return { redisServer, redis, apiKey, secret, sim, tap, receiver, prefix, keys: chaosKeys(prefix), env };
}

function chaosKeys(prefix: string) {
  const layout = layoutFor(prefix);
  return { ...layout.partitions[0]!, intake: layout.intake };
}

/** The replicas' config file, in a temporary directory removed at the end; returns its path. */
function writeWatcherConfig(o: ChaosOptions, receiverUrl: string, cleanups: Cleanups): string {
  const dir = mkdtempSync(join(tmpdir(), 'lrw-chaos-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const configPath = join(dir, 'watcher.json');
  writeFileSync(
    configPath,
    JSON.stringify({
      // Hung requests time out in a second; the webhook schedule is the default one (at once,
      // 5 s, 5 min, ...), so deliveries the outage and the 30 % failures push back to 5 min
      // come through only by catching up when the endpoint answers again.
      poll: { leaseMs: o.leaseMs },
      letta: { requestTimeoutMs: 1000, retries: 1, retryMinMs: 20, retryMaxMs: 100, retryAfterCapMs: 200, authPauseMs: 1000 },
      webhooks: {
        targets: [
          { url: `${receiverUrl}/events`, name: 'events' },
          { url: `${receiverUrl}/letta`, name: 'letta', format: 'letta' },
        ],
        attemptTimeoutMs: 2000,
      },
    }),
  );
  return configPath;
}

function replicaEnv(w: { o: ChaosOptions; redisUrl: string; prefix: string; lettaUrl: string; apiKey: string; secret: string; configPath: string }): Record<string, string> {
  return {
    REDIS_URL: w.redisUrl,
    WATCHER_KEY_PREFIX: w.prefix,
    LETTA_BASE_URL: w.lettaUrl,
    LETTA_API_KEY: w.apiKey,
    WATCHER_WEBHOOK_SECRET: w.secret,
    WATCHER_CONFIG: w.configPath,
    WATCHER_POLL_INITIAL_MS: '200',
    WATCHER_POLL_MAX_MS: '2000',
    WATCHER_HTTP_PORT: '0',
    WATCHER_LOG_LEVEL: w.o.logLevel,
    WATCHER_SHUTDOWN_GRACE_MS: '2000',
  };
}

/** Runs the cleanups in reverse, each on a best-effort basis. */
export async function runCleanups(cleanups: Cleanups): Promise<void> {
  for (const fn of cleanups.reverse()) {
    try {
      await fn();
    } catch {
      // best effort
    }
  }
}
