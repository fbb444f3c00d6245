import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cluster, Redis } from 'ioredis';
import { layoutFor } from '../../src/redis/keys.ts';
import { startRedisCluster } from '../../test/kit/redis-cluster.ts';
import { verdict } from '../output.ts';
import { commandStats, daemonReadyOn, fmt, startApiServer, startDaemon, statDelta } from '../support.ts';
import type { BenchContext, ClusterBench, Outcome } from '../types.ts';

/**
 * 9. Redis Cluster: does the load spread? A 3-master cluster (no replicas: they would only add
 * replication traffic to the same two cores), the daemon with WATCHER_PARTITIONS = N, runs
 * that never finish (so it polls flat out), and for one window: every master's share of the
 * Redis commands (top-level and inside scripts, from INFO commandstats) and of Redis CPU, and
 * the poll rate, next to the same daemon on the standalone Redis in the same run.
 */

/** WATCHER_PARTITIONS for the daemon on the cluster. */
const PARTITIONS = 6;

async function cpuMs(r: Redis): Promise<number> {
  const info = await r.info('cpu');
  const num = (k: string) => Number(new RegExp(`^${k}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  return (num('used_cpu_sys') + num('used_cpu_user')) * 1000;
}

async function commandsOn(r: Redis): Promise<Map<string, { calls: number; usec: number }>> {
  return await commandStats(r);
}

function total(stats: Map<string, { calls: number }>): number {
  let n = 0;
  for (const s of stats.values()) n += s.calls;
  return n;
}

/** Polls per second the API stub saw over `windowS`, after `warmupS`. */
async function pollRate(api: Awaited<ReturnType<typeof startApiServer>>, warmupS: number, windowS: number): Promise<number> {
  await sleep(warmupS * 1000);
  const a = await api.stats();
  await sleep(windowS * 1000);
  const b = await api.stats();
  return (b.requests - a.requests) / ((b.t - a.t) / 1000);
}

export async function benchCluster({ redis, sizes }: BenchContext): Promise<ClusterBench> {
  const o = { standalone: redis, partitions: PARTITIONS, runs: sizes.clusterRuns, warmupS: sizes.clusterWarmupS, windowS: sizes.clusterWindowS };
  const api = await startApiServer(0);
  const env = { WATCHER_CONCURRENCY: '32', WATCHER_POLL_INITIAL_MS: '50', WATCHER_POLL_MAX_MS: '200' };
  const ids = () => Array.from({ length: o.runs }, () => `run-${randomUUID()}`);
  try {
    // Standalone, the same runs and settings, for the poll rate next to it.
    const prefix = `lw-bench-${randomUUID().slice(0, 8)}`;
    const layout1 = layoutFor(prefix, 1);
    const standaloneIds = ids();
    for (let i = 0; i < standaloneIds.length; i += 1000) await o.standalone.client.lpush(layout1.intake, ...standaloneIds.slice(i, i + 1000));
    const d1 = startDaemon({ redisUrl: o.standalone.url, apiUrl: api.url, env: { ...env, WATCHER_KEY_PREFIX: prefix } });
    await daemonReadyOn(o.standalone.client, d1);
    const standalone = await pollRate(api, o.warmupS, o.windowS);
    await d1.stop();

    const cluster = await startRedisCluster({ masters: 3, replicasPerMaster: 0 });
    let client: Cluster | undefined;
    try {
      client = cluster.client();
      const layout = layoutFor('lw-bench', o.partitions);
      const clusterIds = ids();
      for (let i = 0; i < clusterIds.length; i += 1000) await client.lpush(layout.intake, ...clusterIds.slice(i, i + 1000));
      const d = startDaemon({
        redisUrl: '',
        apiUrl: api.url,
        env: { ...env, REDIS_URL: '', REDIS_CLUSTER_NODES: cluster.seeds, WATCHER_PARTITIONS: String(o.partitions), WATCHER_KEY_PREFIX: 'lw-bench' },
      });
      const masters = client.nodes('master');
      await daemonReadyOn(masters, d);
      await sleep(o.warmupS * 1000);
      const before = await Promise.all(masters.map(async (m) => ({ stats: await commandsOn(m), cpu: await cpuMs(m) })));
      const a = await api.stats();
      await sleep(o.windowS * 1000);
      const b = await api.stats();
      const after = await Promise.all(masters.map(async (m) => ({ stats: await commandsOn(m), cpu: await cpuMs(m) })));
      await d.stop();
      const per = masters.map((m, i) => ({
        port: Number(m.options.port),
        commands: total(statDelta(before[i]?.stats ?? new Map(), after[i]?.stats ?? new Map())),
        cpuMs: (after[i]?.cpu ?? 0) - (before[i]?.cpu ?? 0),
      }));
      const all = per.reduce((s, m) => s + m.commands, 0);
      return {
        partitions: o.partitions,
        runs: o.runs,
        windowS: o.windowS,
        masters: per,
        busiestShare: all > 0 ? Math.max(...per.map((m) => m.commands)) / all : Number.NaN,
        pollsPerSecond: { cluster: (b.requests - a.requests) / ((b.t - a.t) / 1000), standalone },
      };
    } finally {
      client?.disconnect();
      await cluster.destroy();
    }
  } finally {
    await api.stop();
  }
}

export function clusterOutcome(c: ClusterBench): Outcome {
  const met = c.busiestShare <= 0.45;
  return {
    targets: [
      { figure: `Redis Cluster, 3 masters, ${c.partitions} partitions: commands on the busiest master`, target: '≤ 45 %', value: `${(100 * c.busiestShare).toFixed(1)} %`, met },
    ],
    figures: [
      {
        name: 'cluster',
        text: `busiest master ${(100 * c.busiestShare).toFixed(1)} % of commands (${c.masters.map((m) => fmt(m.commands)).join(' / ')}); ${fmt(c.pollsPerSecond.cluster)} polls/s on the cluster vs ${fmt(c.pollsPerSecond.standalone)} standalone (${verdict(met)})`,
      },
    ],
  };
}
