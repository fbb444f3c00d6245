import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { parseLettaTime } from '../../src/letta/run-state.ts';
import type { WatchEvent } from '../../src/events/event.ts';
import { layoutFor } from '../../src/redis/keys.ts';
import { startSimulator, type Simulator } from '../../tools/simulator/server.ts';
import { freePort } from '../../test/kit/redis-server.ts';
import { logUniform } from '../lag-model.ts';
import { fmt, percentile, seeded, startDaemon, type DaemonProcess } from '../support.ts';
import type { BenchContext, Detection, Outcome, StrategyResult } from '../types.ts';

/**
 * 7. Detection at real time: the same batch of concurrent runs (log-uniform durations) watched
 * five ways at once, each with its own simulator, prefix and daemon, so one run of the bench
 * puts them side by side. For each: lag from the run's end to its event (p50, p99), API
 * requests per run (list calls included) and response bytes per run.
 */
export interface Strategy {
  name: string;
  env: Record<string, string>;
  callbacks: boolean;
}

export const STRATEGIES: readonly Strategy[] = [
  { name: 'fixed 2 s', env: { WATCHER_POLL_INITIAL_MS: '2000', WATCHER_POLL_MAX_MS: '2000', WATCHER_POLL_FACTOR: '1', WATCHER_POLL_JITTER: '0', WATCHER_RECONCILE_MS: '0' }, callbacks: false },
  { name: 'cadence alone', env: { WATCHER_RECONCILE_MS: '0' }, callbacks: false },
  { name: 'reconciliation', env: {}, callbacks: false },
  { name: 'callbacks, 20 % dropped', env: { WATCHER_RECONCILE_MS: '0' }, callbacks: true },
  { name: 'default (all together)', env: {}, callbacks: true },
];

const TOKEN = 'bench-callback-token-0123456789';
/** How far the simulator's list lags retrieve. */
const LIST_LAG_MS = 500;
const SEED = 12;

async function events(r: Redis, prefix: string): Promise<WatchEvent[]> {
  const out: WatchEvent[] = [];
  let start = '-';
  for (;;) {
    const page = await r.xrange(layoutFor(prefix).partitions[0]!.events, start, '+', 'COUNT', 1000);
    for (const [, fields] of page) out.push(JSON.parse(fields[1] ?? '{}') as WatchEvent);
    if (page.length < 1000) return out;
    start = `(${page[page.length - 1]?.[0] ?? ''}`;
  }
}

export async function benchDetection({ redis, sizes }: BenchContext): Promise<Detection> {
  const o = { redis, runs: sizes.detectRuns, minMs: sizes.detectMinMs, maxMs: sizes.detectMaxMs, listLagMs: LIST_LAG_MS, seed: SEED };
  const t0 = performance.now();
  const durations = logUniform(o.runs, o.minMs, o.maxMs, seeded(o.seed));
  const lanes: { s: Strategy; sim: Simulator; prefix: string; daemon: DaemonProcess; ids: string[]; callbackUrl: string }[] = [];
  try {
    for (const s of STRATEGIES) {
      const sim = await startSimulator({ port: 0, random: seeded(o.seed + 1), faults: { listLagMs: o.listLagMs, callbackDropRate: s.callbacks ? 0.2 : 0 } });
      const prefix = `lw-detect-${randomUUID().slice(0, 8)}`;
      const port = await freePort();
      const daemon = startDaemon({
        redisUrl: o.redis.url,
        apiUrl: sim.url,
        env: { WATCHER_KEY_PREFIX: prefix, WATCHER_HTTP_PORT: String(port), WATCHER_HTTP_HOST: '127.0.0.1', ...(s.callbacks ? { WATCHER_CALLBACK_TOKEN: TOKEN } : {}), ...s.env },
      });
      lanes.push({ s, sim, prefix, daemon, ids: [], callbackUrl: `http://127.0.0.1:${port}/callbacks/letta?token=${TOKEN}` });
      // Wait for its HTTP server: the callbacks must have somewhere to land.
      for (let i = 0; i < 200; i++) {
        const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
        if (ok) break;
        await sleep(50);
      }
    }
    // The same runs for every lane, created and enqueued together.
    for (const lane of lanes) {
      for (const d of durations) lane.ids.push(lane.sim.createRun({ durationMs: d, outcome: 'completed', ...(lane.s.callbacks ? { callbackUrl: lane.callbackUrl } : {}) }).id);
      const intake = layoutFor(lane.prefix).intake;
      for (let i = 0; i < lane.ids.length; i += 500) await o.redis.client.lpush(intake, ...lane.ids.slice(i, i + 500));
    }
    // Until every lane has every event (or the longest run is well past).
    const deadline = performance.now() + o.maxMs + 90_000;
    for (;;) {
      const counts = await Promise.all(lanes.map((l) => o.redis.client.xlen(layoutFor(l.prefix).partitions[0]!.events)));
      if (counts.every((n) => n >= o.runs) || performance.now() > deadline) break;
      await sleep(1000);
    }
    const results: StrategyResult[] = [];
    for (const lane of lanes) {
      const evs = await events(o.redis.client, lane.prefix);
      const lags = evs
        .map((e) => Date.parse(e.data.watch.detected_at) - (parseLettaTime(e.data.run?.completed_at) ?? Number.NaN))
        .filter((x) => !Number.isNaN(x))
        .sort((a, b) => a - b);
      const st = lane.sim.stats();
      results.push({
        name: lane.s.name,
        runs: o.runs,
        detected: evs.length,
        p50Ms: percentile(lags, 50),
        p99Ms: percentile(lags, 99),
        requestsPerRun: st.requests / o.runs,
        listRequests: st.listRequests,
        bytesPerRun: st.responseBytes / o.runs,
      });
    }
    return { runs: o.runs, minMs: o.minMs, maxMs: o.maxMs, listLagMs: o.listLagMs, results, seconds: (performance.now() - t0) / 1000 };
  } finally {
    for (const lane of lanes) {
      await lane.daemon.stop();
      await lane.sim.close();
    }
  }
}

export function detectionOutcome(d: Detection): Outcome {
  const targets: Outcome['targets'] = [];
  const def = d.results.find((r) => r.name.startsWith('default'));
  if (def) {
    const met = def.p99Ms <= 3000 && def.requestsPerRun <= 3;
    targets.push({ figure: 'Detection, default settings: p99 lag and API requests per run', target: '≤ 3 s, ≤ 3', value: `${(def.p99Ms / 1000).toFixed(2)} s, ${def.requestsPerRun.toFixed(2)}`, met });
  }
  const callbacks = d.results.find((r) => r.name.startsWith('callbacks'));
  if (callbacks) {
    targets.push({ figure: 'Detection with callbacks (20 % dropped): p50 lag', target: '≤ 0.5 s', value: `${(callbacks.p50Ms / 1000).toFixed(2)} s`, met: callbacks.p50Ms <= 500 });
  }
  return {
    targets,
    figures: [
      {
        name: 'detection-strategies',
        text: d.results.map((r) => `${r.name}: p50 ${(r.p50Ms / 1000).toFixed(2)} s, p99 ${(r.p99Ms / 1000).toFixed(2)} s, ${r.requestsPerRun.toFixed(2)} req/run, ${fmt(r.bytesPerRun)} B/run`).join('; '),
      },
    ],
  };
}
