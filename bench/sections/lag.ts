import { setTimeout as sleep } from 'node:timers/promises';
import { parseLettaTime } from '../../src/letta/run-state.ts';
import type { WatchEvent } from '../../src/events/event.ts';
import { startSimulator } from '../../tools/simulator/server.ts';
import { CONCURRENCY, KEYS } from '../config.ts';
import { fixed, logUniform, monteCarlo, simulateCadence, summarize } from '../lag-model.ts';
import { reset } from '../schedule.ts';
import { daemonReady, seeded, startDaemon, waitFor } from '../support.ts';
import type { BenchContext, Lag, LiveLag, Outcome } from '../types.ts';

/**
 * 5. Detection lag: the Monte Carlo over the daemon's cadence (lag-model.ts), then a live check
 * of two strategies against the simulator at a scaled-down time, next to the model's prediction
 * for the same durations.
 */

/** The daemon's default cadence (config/default.json), which the model and the live check use. */
const DEFAULT_CADENCE = { initialMs: 1000, maxMs: 30_000, factor: 1.6, jitter: 0.2 };

async function liveLag(
  { redis, sizes }: BenchContext,
  sim: Awaited<ReturnType<typeof startSimulator>>,
  strategy: string,
  cadence: LiveLag['cadence'],
  scale: number,
): Promise<LiveLag> {
  const r = redis.client;
  await reset(r);
  const d = startDaemon({
    redisUrl: redis.url,
    apiUrl: sim.url,
    env: {
      WATCHER_CONCURRENCY: String(CONCURRENCY),
      WATCHER_POLL_INITIAL_MS: String(cadence.initialMs),
      WATCHER_POLL_MAX_MS: String(cadence.maxMs),
      WATCHER_POLL_FACTOR: String(cadence.factor),
      WATCHER_POLL_JITTER: String(cadence.jitter),
      // This checks the cadence model: polls alone, no reconciliation with the list (section 7
      // measures that).
      WATCHER_RECONCILE_MS: '0',
    },
    // The intake check interval, scaled like the cadence, so the first poll comes as soon.
    config: { intake: { idleMs: Math.max(1, Math.round(100 / scale)) } },
  });
  try {
    await daemonReady(r, d);
    const n = sizes.liveRuns;
    const durations = logUniform(n, 2000 / scale, 600_000 / scale, seeded(7));
    const spread = seeded(8);
    const starts = durations.map(() => spread() * sizes.liveSpreadMs);
    const t0 = performance.now();
    await Promise.all(
      durations.map(async (duration, i) => {
        await sleep(Math.max(0, t0 + (starts[i] ?? 0) - performance.now()));
        const run = sim.createRun({ durationMs: duration, outcome: 'completed' });
        await r.lpush(KEYS.intake, run.id);
      }),
    );
    await waitFor(
      `${n} events`,
      async () => (await r.xlen(KEYS.events)) >= n,
      sizes.liveSpreadMs + 600_000 / scale + 30_000,
      20,
      () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
    );
    const entries = await r.xrange(KEYS.events, '-', '+');
    const samples = entries.map(([, fields]) => {
      const ev = JSON.parse(fields[1] ?? '{}') as WatchEvent;
      const end = parseLettaTime(ev.data.run?.completed_at) ?? Number.NaN;
      const lag = Date.parse(ev.data.watch.detected_at) - end;
      return { duration: 0, lag, calls: sim.pollsOf(ev.data.run_id) };
    });
    if (samples.some((s) => !Number.isFinite(s.lag))) throw new Error('live lag: an event without completed_at');
    const stop = await d.stop();
    if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
    const predicted = summarize('Monte Carlo, same runs', simulateCadence(durations, cadence, seeded(11)));
    return { scale, strategy, cadence, runs: n, live: summarize('live', samples), predicted };
  } finally {
    await d.stop();
  }
}

export async function benchLag(ctx: BenchContext): Promise<Lag> {
  const mc = monteCarlo(ctx.sizes.mcN, 2000, 600_000, DEFAULT_CADENCE);
  if (mc.rows.length < 3) throw new Error('lag: Monte Carlo gave no rows');
  const s = ctx.sizes.liveScale;
  const sim = await startSimulator({ port: 0 });
  const live: LiveLag[] = [];
  try {
    const scaled = {
      initialMs: Math.max(1, Math.round(DEFAULT_CADENCE.initialMs / s)),
      maxMs: Math.max(1, Math.round(DEFAULT_CADENCE.maxMs / s)),
      factor: DEFAULT_CADENCE.factor,
      jitter: DEFAULT_CADENCE.jitter,
    };
    live.push(await liveLag(ctx, sim, 'default cadence', scaled, s));
    live.push(await liveLag(ctx, sim, 'fixed, same mean calls', fixed(Math.max(1, Math.round(mc.equalCallsIntervalMs / s))), s));
  } finally {
    await sim.close();
  }
  return { mc, live };
}

export function lagOutcome({ mc, live }: Lag): Outcome {
  const [e, f, p] = mc.rows;
  if (!e || !f || !p) throw new Error('lag: Monte Carlo gave no rows');
  const sec = (ms: number) => (ms / 1000).toFixed(2);
  const figures: Outcome['figures'] = [
    {
      name: 'detection-lag',
      text: `default cadence p50 ${sec(e.p50)} s, p99 ${sec(e.p99)} s, ${e.meanCalls.toFixed(2)} calls/run; fixed ${sec(mc.equalCallsIntervalMs)} s interval (same calls) p50 ${sec(f.p50)} s, p99 ${sec(f.p99)} s; same p99 by fixed interval costs ${p.meanCalls.toFixed(1)} calls/run`,
    },
  ];
  const [le, lf] = live;
  if (le && lf) {
    figures.push({
      name: 'detection-lag-live',
      text: `1/${le.scale} time scale, ${le.runs} runs: default cadence p50 ${le.live.p50.toFixed(0)} ms (predicted ${le.predicted.p50.toFixed(0)}), p99 ${le.live.p99.toFixed(0)} ms (predicted ${le.predicted.p99.toFixed(0)}), ${le.live.meanCalls.toFixed(2)} calls/run (predicted ${le.predicted.meanCalls.toFixed(2)}); fixed p50 ${lf.live.p50.toFixed(0)} ms (predicted ${lf.predicted.p50.toFixed(0)}), p99 ${lf.live.p99.toFixed(0)} ms (predicted ${lf.predicted.p99.toFixed(0)}), ${lf.live.meanCalls.toFixed(2)} calls/run`,
    });
  }
  return { targets: [], figures };
}
