import { Cluster } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { layoutFor, partitionIndex } from '../src/redis/keys.ts';
import type { WatchEvent } from '../src/events/event.ts';
import type { CreatedRun } from '../tools/simulator/server.ts';
import {
  Cleanup,
  captureLogger,
  expectExactlyOnce,
  killAllDaemons,
  newPrefix,
  spawnDaemon,
  startDaemon,
  startReceiverIn,
  startSimulatorIn,
  testConfig,
  testEnv,
  waitFor,
  type StreamEvent,
} from './kit/harness.ts';
import { startRedisCluster, type RedisCluster } from './kit/redis-cluster.ts';
import { seeded } from '../tools/simulator/prng.ts';
import { afterEach } from 'vitest';

/**
 * A real Redis Cluster on loopback: 3 masters with a replica each. The daemon runs with
 * WATCHER_PARTITIONS=6, so each master holds two partitions, while the test moves slots
 * (redis-cli --cluster reshard: keys migrate one by one and scripts meet ASK and TRYAGAIN)
 * and forces a CLUSTER FAILOVER. What must hold afterwards: exactly one event per run across
 * the six streams, every webhook delivered, nothing left in any processing list.
 */
const cleanup = new Cleanup();
afterEach(async () => {
  await killAllDaemons();
  await cleanup.run();
});

const LONG = process.env['LRW_LONG'] === '1';
const SEED = Number(process.env['LRW_SEED'] ?? 7);

async function cluster(): Promise<RedisCluster> {
  const c = await startRedisCluster();
  cleanup.add(() => c.destroy());
  return c;
}

function client(c: RedisCluster): Cluster {
  const r = c.client();
  cleanup.add(() => r.disconnect());
  return r;
}

async function readAllEvents(r: Cluster, prefix: string, partitions: number): Promise<StreamEvent[]> {
  const out: StreamEvent[] = [];
  for (const p of layoutFor(prefix, partitions).partitions) {
    for (const [streamId, fields] of await r.xrange(p.events, '-', '+')) {
      out.push({ streamId, event: JSON.parse(fields[1] ?? '{}') as WatchEvent });
    }
  }
  return out;
}

/** Keys matching `pattern` on every master. */
async function scanMasters(r: Cluster, pattern: string): Promise<string[]> {
  const found: string[] = [];
  for (const node of r.nodes('master')) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      found.push(...keys);
    } while (cursor !== '0');
  }
  return found;
}

describe('Redis Cluster', () => {
  it(`${LONG ? 1000 : 600} runs, 6 partitions, 2 daemons, slots moved and a master failed over: every run exactly once, every webhook`, async () => {
    const c = await cluster();
    const r = client(c);
    const random = seeded(SEED);
    console.log(`cluster test seed ${SEED}`);
    const sim = await startSimulatorIn(cleanup, { random, durationMs: [300, 3000], faults: { errorRate: 0.05 } });
    const rx = await startReceiverIn(cleanup, { secrets: [] });
    const prefix = newPrefix();
    const partitions = 6;
    const env = testEnv({
      REDIS_URL: undefined,
      REDIS_CLUSTER_NODES: c.seeds,
      WATCHER_PARTITIONS: String(partitions),
      WATCHER_KEY_PREFIX: prefix,
      LETTA_BASE_URL: sim.url,
      WATCHER_WEBHOOK_URLS: `${rx.url}/hook`,
      WATCHER_LOG_LEVEL: 'info',
    });
    const daemons = [spawnDaemon(env), spawnDaemon(env)];
    await Promise.all(daemons.map((d) => d.ready()));
    const layout = layoutFor(prefix, partitions);

    const total = LONG ? 1000 : 600;
    const runs = new Map<string, CreatedRun>();
    const push = async (n: number) => {
      const batch = Array.from({ length: n }, () => sim.createRun());
      for (const run of batch) runs.set(run.id, run);
      await r.lpush(layout.intake, ...batch.map((run) => run.id));
    };
    await push(total / 3);
    // Move 2000 slots off the first master: the slots of partition 0's tag among them.
    const t = await c.topology();
    const [a, b, third] = t.masters;
    if (!a || !b || !third) throw new Error('expected 3 masters');
    const moving = c.reshard(a.port, b.port, 2000);
    await push(total / 3);
    await moving;
    await c.settled();
    // Fail over the third master to its replica.
    const replica = t.replicas.find((x) => x.master === third.id);
    if (!replica) throw new Error('no replica for the third master');
    await c.failover(replica.port);
    await push(total / 3);

    const ids = [...runs.keys()];
    await waitFor(async () => (await readAllEvents(r, prefix, partitions)).length >= ids.length, {
      timeoutMs: 120_000,
      intervalMs: 250,
      describe: async () => `${(await readAllEvents(r, prefix, partitions)).length} of ${ids.length} events`,
    });
    await waitFor(() => rx.deliveredIds().size >= ids.length, { timeoutMs: 60_000, describe: () => `${rx.deliveredIds().size} of ${ids.length} webhooks` });
    const events = await readAllEvents(r, prefix, partitions);
    expectExactlyOnce(events, ids, runs);
    // Each event is in its run's partition's stream, and the partitions really spread.
    const perPartition = layout.partitions.map((p) => events.filter((e) => partitionIndex(e.event.data.run_id, partitions) === p.index).length);
    expect(perPartition.every((n) => n > total / partitions / 2)).toBe(true);
    expect(rx.deliveredIds()).toEqual(new Set(events.map((e) => e.event.id)));
    for (const code of await Promise.all(daemons.map((d) => d.stop()))) expect(code).toBe(0);
    expect(await scanMasters(r, `{${layout.intake}}:processing:*`)).toEqual([]);
    expect(await r.llen(layout.intake)).toBe(0);
  }, 240_000);

  it('a partition key of the wrong type on Cluster: that partition waits (nothing lost), readiness names the key, the others go on', async () => {
    const c = await cluster();
    const r = client(c);
    const sim = await startSimulatorIn(cleanup);
    const partitions = 3;
    const prefix = newPrefix();
    const config = testConfig({ REDIS_URL: undefined, REDIS_CLUSTER_NODES: c.seeds, WATCHER_PARTITIONS: String(partitions), WATCHER_KEY_PREFIX: prefix, LETTA_BASE_URL: sim.url });
    const layout = layoutFor(prefix, partitions);
    const broken = layout.partitions[1]!;
    await r.set(broken.runs, 'oops');
    const runs = Array.from({ length: 60 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }));
    const inBroken = runs.filter((run) => partitionIndex(run.id, partitions) === 1).map((run) => run.id);
    const elsewhere = runs.filter((run) => partitionIndex(run.id, partitions) !== 1).map((run) => run.id);
    await r.lpush(layout.intake, ...runs.map((run) => run.id));
    const { log } = captureLogger('error');
    const daemon = await startDaemon(cleanup, config, { log });
    await waitFor(async () => (await daemon.notReady()).some((x) => x.includes(`${broken.runs} holds a string, expected a hash`)), { describe: async () => JSON.stringify(await daemon.notReady()) });
    // The other partitions' runs finish; the broken one's wait in a processing list.
    await waitFor(async () => (await readAllEvents(r, prefix, partitions)).length === elsewhere.length, {
      describe: async () => `${(await readAllEvents(r, prefix, partitions)).length} of ${elsewhere.length} events`,
    });
    expect(await scanMasters(r, `{${layout.intake}}:processing:*`)).toHaveLength(1);
    await r.del(broken.runs);
    await waitFor(async () => (await readAllEvents(r, prefix, partitions)).length === runs.length, { timeoutMs: 30_000 });
    expectExactlyOnce(await readAllEvents(r, prefix, partitions), [...inBroken, ...elsewhere]);
    await waitFor(async () => (await daemon.notReady()).length === 0);
  }, 120_000);
});
