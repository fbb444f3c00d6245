import { KEYS, LEASE_MS } from '../config.ts';
import { note, verdict } from '../output.ts';
import { fillViaIntake, makeSchedule, redisNow, reset } from '../schedule.ts';
import { daemonReady, fmt, startApiServer, startDaemon, waitFor } from '../support.ts';
import type { BenchContext, Outcome, Shutdown } from '../types.ts';

/**
 * 6. Shutdown with runs in flight: every watched run's poll is held by the API stub when
 * SIGTERM arrives; afterwards each must be back in the schedule, unleased, with nothing
 * committed or dead-lettered. Two scenarios: "drain" (answers come within the grace period)
 * and "hand back" (they would come long after it).
 */

async function shutdownScenario({ redis, sizes }: BenchContext, scenario: string, latencyMs: number, graceMs: number): Promise<Shutdown> {
  const r = redis.client;
  const n = sizes.shutdownN;
  const schedule = makeSchedule(r);
  const api = await startApiServer(latencyMs);
  try {
    await reset(r);
    await fillViaIntake(r, schedule, n);
    const d = startDaemon({
      redisUrl: redis.url,
      apiUrl: api.url,
      env: { WATCHER_CONCURRENCY: String(Math.min(10_000, n)), WATCHER_SHUTDOWN_GRACE_MS: String(graceMs) },
      config: {},
    });
    try {
      const t0 = performance.now();
      await daemonReady(r, d);
      let inflight = 0;
      await waitFor(
        `${n} requests in flight`,
        async () => {
          inflight = (await api.stats()).inflight;
          return inflight >= n;
        },
        Math.max(5_000, latencyMs - 500),
        50,
        () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
      ).catch(() => undefined);
      const rampMs = performance.now() - t0;
      inflight = (await api.stats()).inflight;
      const diedEarly = d.child.exitCode !== null || d.child.signalCode !== null ? d.child.exitCode : undefined;
      if (diedEarly !== undefined) note(`shutdown (${scenario}): the daemon died before SIGTERM (exit ${diedEarly}, signal ${d.child.signalCode}): ${d.logs().slice(-1500)}`);
      const stop = await d.stop(graceMs + 60_000);
      const now = await redisNow(r);
      const [inSchedule, stillLeased, dueNow, events, dead] = await Promise.all([
        r.zcard(KEYS.due),
        r.zcount(KEYS.due, now + LEASE_MS / 4, '+inf'),
        r.zcount(KEYS.due, '-inf', now),
        r.xlen(KEYS.events),
        r.llen(KEYS.dead),
      ]);
      return {
        scenario,
        latencyMs,
        graceMs,
        runs: n,
        inFlightAtSignal: inflight,
        rampMs,
        exitMs: stop.ms,
        exitCode: stop.code,
        inSchedule,
        stillLeased,
        dueNow,
        events,
        dead,
        allBack: diedEarly === undefined && stop.code === 0 && inSchedule === n && stillLeased === 0 && events === 0 && dead === 0,
        diedEarly,
      };
    } finally {
      await d.stop();
    }
  } finally {
    await api.stop();
  }
}

export async function benchShutdown(ctx: BenchContext): Promise<Shutdown[]> {
  return [
    await shutdownScenario(ctx, 'drain', ctx.sizes.drainLatencyMs, 10_000),
    await shutdownScenario(ctx, 'hand back', ctx.sizes.handBackLatencyMs, ctx.sizes.handBackGraceMs),
  ];
}

export function shutdownOutcome(shutdown: Shutdown[]): Outcome {
  const allBack = shutdown.every((s) => s.allBack);
  return {
    targets: shutdown.map((s) => ({
      figure: `Shutdown (${s.scenario}) with ${fmt(s.inFlightAtSignal)} in flight: all handed back`,
      target: 'every run back, exit 0',
      value: `${(s.exitMs / 1000).toFixed(2)} s to exit, ${fmt(s.inSchedule)}/${fmt(s.runs)} back, ${fmt(s.stillLeased)} leased`,
      met: s.allBack,
    })),
    figures: [
      {
        name: 'shutdown',
        text:
          shutdown
            .map((s) => `${s.scenario}: ${s.diedEarly !== undefined ? `DAEMON DIED BEFORE SIGTERM (exit ${s.diedEarly}), ` : ''}${fmt(s.inFlightAtSignal)} in flight, SIGTERM → exit ${(s.exitMs / 1000).toFixed(2)} s (grace ${(s.graceMs / 1000).toFixed(1)} s), ${fmt(s.inSchedule)}/${fmt(s.runs)} back in schedule, ${fmt(s.stillLeased)} still leased`)
            .join('; ') + ` (all handed back: ${verdict(allBack)})`,
      },
    ],
  };
}
