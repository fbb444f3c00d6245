import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { parseLettaTime } from '../src/letta/run-state.ts';
import type { WatchEvent } from '../src/events/event.ts';
import { layoutFor } from '../src/redis/keys.ts';
import { startSimulator, type Simulator } from '../tools/simulator/server.ts';
import { freePort } from '../test/kit/redis-server.ts';
import { logUniform } from './lag.ts';
import { fmt, percentile, seeded, startDaemon, type BenchRedis, type DaemonProcess } from './support.ts';

/**
 * Detection at real time: the same batch of concurrent runs (log-uniform durations) watched
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

export interface StrategyResult {
  name: string;
  runs: number;
  detected: number;
  p50Ms: number;
  p99Ms: number;
  requestsPerRun: number;
  listRequests: number;
  bytesPerRun: number;
}

export interface Detection {
  runs: number;
  minMs: number;
  maxMs: number;
  listLagMs: number;
  results: StrategyResult[];
  seconds: number;
}

const TOKEN = 'bench-callback-token-0123456789';

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

export async function benchDetection(o: { redis: BenchRedis; runs: number; minMs: number; maxMs: number; listLagMs: number; seed: number }): Promise<Detection> {
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

const sec = (ms: number) => (ms / 1000).toFixed(2);

export function detectionMarkdown(d: Detection): string[] {
  return [
    '## 7. Detection at real time: five strategies side by side',
    '',
    `${fmt(d.runs)} concurrent runs with log-uniform durations from ${d.minMs / 1000} s to ${d.maxMs / 1000} s, at real time (not scaled), the same runs watched five ways at once ` +
      `(one simulator, prefix and daemon each; the simulator's list lags retrieve by ${d.listLagMs} ms; callbacks drop 20 %). Lag runs from the run's \`completed_at\` to its event. ` +
      `Requests count every call to the API (list calls included); bytes are the API's response bodies. ${d.seconds.toFixed(0)} s in all.`,
    '',
    '| strategy | events | lag p50 | lag p99 | API requests / run | of which lists | response bytes / run |',
    '|---|---|---|---|---|---|---|',
    ...d.results.map(
      (r) => `| ${r.name} | ${fmt(r.detected)}/${fmt(r.runs)} | ${sec(r.p50Ms)} s | ${sec(r.p99Ms)} s | ${r.requestsPerRun.toFixed(2)} | ${fmt(r.listRequests)} | ${fmt(r.bytesPerRun)} |`,
    ),
    '',
    '![lag and API requests per strategy](bench/detection.svg)',
    '',
  ];
}

/** Bars: p50 and p99 lag per strategy, and requests per run. */
export function detectionSvg(d: Detection): string {
  const w = 720;
  const rowH = 46;
  const left = 190;
  const h = 40 + rowH * d.results.length + 30;
  const maxLag = Math.max(1, ...d.results.map((r) => r.p99Ms));
  const maxReq = Math.max(1, ...d.results.map((r) => r.requestsPerRun));
  const lagW = 300;
  const reqW = 150;
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const rows = d.results
    .map((r, i) => {
      const y = 40 + i * rowH;
      const p50 = (r.p50Ms / maxLag) * lagW;
      const p99 = (r.p99Ms / maxLag) * lagW;
      const req = (r.requestsPerRun / maxReq) * reqW;
      return [
        `<text x="${left - 8}" y="${y + 18}" text-anchor="end" font-size="12">${esc(r.name)}</text>`,
        `<rect x="${left}" y="${y + 4}" width="${p99.toFixed(1)}" height="12" fill="#f4a582"/>`,
        `<rect x="${left}" y="${y + 4}" width="${p50.toFixed(1)}" height="12" fill="#ca0020"/>`,
        `<text x="${left + p99 + 4}" y="${y + 14}" font-size="10">p50 ${sec(r.p50Ms)} s, p99 ${sec(r.p99Ms)} s</text>`,
        `<rect x="${left + lagW + 90}" y="${y + 22}" width="${req.toFixed(1)}" height="12" fill="#0571b0"/>`,
        `<text x="${left + lagW + 94 + req}" y="${y + 32}" font-size="10">${r.requestsPerRun.toFixed(2)} req/run</text>`,
      ].join('');
    })
    .join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="10" y="20" font-size="13">Detection lag (red: p50, light: p99) and API requests per run (blue), ${fmt(d.runs)} runs of ${d.minMs / 1000}-${d.maxMs / 1000} s</text>`,
    rows,
    '</svg>',
    '',
  ].join('\n');
}
