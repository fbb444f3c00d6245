import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import type { WatchEvent } from '../../src/events/event.ts';
import type { ReceivedRequest } from '../../test/kit/receiver.ts';
import type { SimStats } from '../../tools/simulator/server.ts';
import { MAIN, ROOT } from '../../test/kit/daemon-process.ts';
import type { ReplicaSet } from './replicas.ts';
import type { World } from './world.ts';

/** What Redis, the daemon's CLI, the receiver, the simulator and the replicas hold at the end. */
export interface Collected {
  /** P:events, as stored and parsed. */
  streamRaw: string[];
  events: WatchEvent[];
  /** P:dead, as stored. */
  deadRaw: string[];
  outboxLeft: number;
  scheduleLeft: number;
  /** `status`, `status --json` and `dead list --json` of the daemon's CLI. */
  statusText: string;
  statusJson: string;
  deadJson: string;
  /** Every request that reached the webhook receiver. */
  requests: readonly ReceivedRequest[];
  simStats: SimStats;
  /** The output of every replica ever started. */
  outputs: string[];
}

/** Reads it all, once the replicas have stopped. */
export async function collect(world: World, replicas: ReplicaSet): Promise<Collected> {
  const { redis, keys: k } = world;
  const { raw: streamRaw, events } = await readStream(redis, k.events);
  const deadRaw = await redis.lrange(k.dead, 0, -1);
  const outboxLeft = await redis.zcard(k.webhooks);
  const scheduleLeft = await redis.zcard(k.due);
  const cliEnv = { REDIS_URL: world.redisServer.url, WATCHER_KEY_PREFIX: world.prefix, LETTA_API_KEY: world.apiKey, WATCHER_WEBHOOK_SECRET: world.secret };
  const statusText = await cli(cliEnv, 'status');
  const statusJson = await cli(cliEnv, 'status', '--json');
  const deadJson = await cli(cliEnv, 'dead', 'list', '--json');
  return {
    streamRaw,
    events,
    deadRaw,
    outboxLeft,
    scheduleLeft,
    statusText,
    statusJson,
    deadJson,
    requests: world.receiver.rx.requests,
    simStats: world.sim.stats(),
    outputs: replicas.outputs(),
  };
}

async function readStream(redis: Redis, key: string): Promise<{ raw: string[]; events: WatchEvent[] }> {
  const raw: string[] = [];
  let start = '-';
  for (;;) {
    const page = await redis.xrange(key, start, '+', 'COUNT', 1000);
    for (const [, fields] of page) raw.push(fields[fields.indexOf('event') + 1] ?? '');
    if (page.length < 1000) break;
    start = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
  return { raw, events: raw.map((r) => JSON.parse(r) as WatchEvent) };
}

const execFileP = promisify(execFile);

/** Runs the daemon's CLI (`node src/main.ts ...args`); its stdout and stderr, even on failure. */
async function cli(env: Record<string, string>, ...args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [MAIN, ...args], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', ...env },
      timeout: 30_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout + stderr;
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; message: string };
    return `${e.stdout ?? ''}${e.stderr ?? ''}${e.message}`;
  }
}
