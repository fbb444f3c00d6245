import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { Daemon } from '../src/daemon.ts';
import { isDaemonError } from '../src/errors.ts';
import type { WatchEvent } from '../src/events/event.ts';
import { makeLogger } from '../src/log.ts';
import type { CreatedRun } from '../tools/simulator/server.ts';
import { seeded } from '../tools/simulator/prng.ts';
import {
  Cleanup,
  configFile,
  expectExactlyOnce,
  keys,
  killAllDaemons,
  newPrefix,
  removeTempFiles,
  spawnDaemon,
  startDaemon,
  startReceiverIn,
  startSimulatorIn,
  testConfig,
  testEnv,
  waitFor,
  type StreamEvent,
} from './kit/harness.ts';
import { startRedisSentinel, type RedisSentinel } from './kit/redis-cluster.ts';

/**
 * Sentinel on loopback: a master, a replica and one sentinel (quorum 1). The daemon is given
 * only the sentinel and the master group's name, and must follow a SENTINEL FAILOVER without a
 * restart; readiness must see a node that refuses writes; WAIT must hold webhooks until a
 * replica has the commit.
 */
const cleanup = new Cleanup();
afterEach(async () => {
  await killAllDaemons();
  await cleanup.run();
  removeTempFiles();
});
const SEED = Number(process.env['LRW_SEED'] ?? 11);

async function sentinelGroup(): Promise<RedisSentinel> {
  const s = await startRedisSentinel();
  cleanup.add(() => s.destroy());
  return s;
}

async function events(r: Redis, prefix: string): Promise<StreamEvent[]> {
  return (await r.xrange(keys(prefix).events, '-', '+')).map(([streamId, fields]) => ({ streamId, event: JSON.parse(fields[1] ?? '{}') as WatchEvent }));
}

describe('Redis Sentinel', () => {
  it('500 runs with a SENTINEL FAILOVER half way: the daemon follows the new master without a restart, every run exactly once, every webhook', async () => {
    const group = await sentinelGroup();
    console.log(`sentinel test seed ${SEED}`);
    const sim = await startSimulatorIn(cleanup, { random: seeded(SEED), durationMs: [200, 2500] });
    const rx = await startReceiverIn(cleanup, { secrets: [] });
    const prefix = newPrefix();
    const env = testEnv({
      REDIS_URL: undefined,
      REDIS_SENTINELS: group.sentinels,
      REDIS_SENTINEL_MASTER: group.masterName,
      WATCHER_KEY_PREFIX: prefix,
      LETTA_BASE_URL: sim.url,
      WATCHER_WEBHOOK_URLS: `${rx.url}/hook`,
      WATCHER_HTTP_PORT: '0',
      WATCHER_LOG_LEVEL: 'info',
    });
    const daemon = spawnDaemon(env);
    await daemon.ready();
    const producer = () => {
      const r = new Redis({ sentinels: [{ host: '127.0.0.1', port: group.ports.sentinel }], name: group.masterName });
      r.on('error', () => {});
      cleanup.add(() => r.disconnect());
      return r;
    };
    let r = producer();
    const runs = new Map<string, CreatedRun>();
    const push = async (n: number) => {
      const batch = Array.from({ length: n }, () => sim.createRun());
      for (const run of batch) runs.set(run.id, run);
      await r.lpush(keys(prefix).intake, ...batch.map((run) => run.id));
    };
    await push(250);
    await waitFor(async () => (await r.xlen(keys(prefix).events)) >= 50, { timeoutMs: 30_000 });
    const before = await group.masterPort();
    const after = await group.failover();
    expect(after).not.toBe(before);
    // A producer asks the sentinel again (the old master may take seconds to be demoted, and
    // what is written to it meanwhile is the producer's to lose, not the daemon's).
    r.disconnect();
    r = producer();
    await push(250);
    const ids = [...runs.keys()];
    await waitFor(async () => (await r.xlen(keys(prefix).events)) >= ids.length, {
      timeoutMs: 90_000,
      intervalMs: 250,
      describe: async () => `${await r.xlen(keys(prefix).events)} of ${ids.length} events\n${daemon.output().split("\n").filter((l) => !l.includes("\"level\":30")).slice(-12).join("\n")}`,
    });
    await waitFor(() => rx.deliveredIds().size >= ids.length, { timeoutMs: 60_000 });
    expectExactlyOnce(await events(r, prefix), ids, runs);
    expect(rx.deliveredIds().size).toBe(ids.length);
    expect(daemon.output()).not.toContain('"level":60');
    expect(await daemon.stop()).toBe(0);
  }, 180_000);

  it('readiness fails, naming READONLY, while the node the daemon holds refuses writes', async () => {
    const group = await sentinelGroup();
    const sim = await startSimulatorIn(cleanup);
    // Pointed straight at the replica (as after a failover, before anything reconnects).
    const config = testConfig({ REDIS_URL: `redis://127.0.0.1:${group.ports.replica}`, LETTA_BASE_URL: sim.url });
    const d = new Daemon({ config, log: makeLogger('silent') });
    cleanup.add(() => d.stop());
    // Start-up waits (it cannot write its layout record); readiness says why meanwhile.
    const started = d.start().catch((err: unknown) => err);
    const reasons = await waitFor(async () => {
      const r = await d.notReady();
      return r.some((x) => /READONLY/.test(x)) ? r : undefined;
    });
    expect(reasons).toContain('daemon is starting');
    await d.stop();
    expect(isDaemonError(await started, 'ERR_STOPPED')).toBe(true);
  });

  it('with redis.waitReplicas = 1 webhooks go out as soon as the replica has the commit; with 2 (one replica) only after the hold', async () => {
    const group = await sentinelGroup();
    const sim = await startSimulatorIn(cleanup);
    const rx = await startReceiverIn(cleanup, { secrets: [] });
    const r = new Redis(group.ports.master);
    cleanup.add(() => r.disconnect());
    const delays: Record<number, number[]> = {};
    for (const waitReplicas of [1, 2]) {
      const config = testConfig({
        REDIS_URL: `redis://127.0.0.1:${group.ports.master}`,
        LETTA_BASE_URL: sim.url,
        WATCHER_WEBHOOK_URLS: `${rx.url}/w${waitReplicas}`,
        WATCHER_CONFIG: configFile({ redis: { waitReplicas, waitTimeoutMs: 500 } }),
      });
      const runs = Array.from({ length: 5 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }));
      await r.lpush(keys(config.redis.keyPrefix).intake, ...runs.map((run) => run.id));
      await startDaemon(cleanup, config);
      await waitFor(() => rx.deliveredIds(`/w${waitReplicas}`).size === runs.length, { timeoutMs: 20_000 });
      const evs = await events(r, config.redis.keyPrefix);
      const committed = new Map(evs.map((e) => [e.event.id, Date.parse(e.event.data.watch.detected_at)]));
      delays[waitReplicas] = rx.on(`/w${waitReplicas}`).map((req) => req.at - (committed.get(req.id ?? '') ?? 0));
    }
    console.log(`webhook delay after commit: waitReplicas 1: ${delays[1]?.join(', ')} ms; waitReplicas 2: ${delays[2]?.join(', ')} ms`);
    const sorted = [...(delays[1] ?? [])].sort((a, b) => a - b);
    expect(sorted[Math.floor(sorted.length / 2)]).toBeLessThan(300);
    // Not confirmed by 2 replicas: held for waitTimeoutMs + 1 s.
    expect(Math.min(...(delays[2] ?? []))).toBeGreaterThanOrEqual(1400);
  });
});

