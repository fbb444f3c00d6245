import { setTimeout as sleep } from 'node:timers/promises';
import { CONCURRENCY } from '../config.ts';
import { latestProfile, summarizeProfile } from '../cpu-profile.ts';
import { fillViaIntake, makeSchedule, reset } from '../schedule.ts';
import { daemonReady, fmt, startApiServer, startDaemon, tempDir } from '../support.ts';
import type { BenchContext, Outcome, ProfileRun } from '../types.ts';

/**
 * CPU profile of the daemon at steady state, separate from the measured runs: the set-up of
 * section 1 under `node --cpu-prof`, summarised by cpu-profile.ts.
 */

export async function profileDaemon({ redis, sizes }: BenchContext): Promise<ProfileRun | undefined> {
  const r = redis.client;
  const schedule = makeSchedule(r);
  const api = await startApiServer(0);
  const dir = tempDir('lrw-bench-prof-');
  try {
    await reset(r);
    await fillViaIntake(r, schedule, sizes.throughputRuns);
    const d = startDaemon({
      redisUrl: redis.url,
      apiUrl: api.url,
      env: { WATCHER_POLL_INITIAL_MS: '1', WATCHER_POLL_MAX_MS: '1', WATCHER_POLL_JITTER: '0', WATCHER_CONCURRENCY: String(CONCURRENCY) },
      config: {},
      nodeArgs: ['--cpu-prof', '--cpu-prof-dir', dir],
    });
    let rate = Number.NaN;
    try {
      await daemonReady(r, d);
      await sleep(2000);
      const s0 = await api.stats();
      await sleep(sizes.profileS * 1000);
      const s1 = await api.stats();
      rate = (s1.requests - s0.requests) / ((s1.t - s0.t) / 1000);
      await d.stop();
    } finally {
      await d.stop();
    }
    const file = latestProfile(dir);
    if (!file) return undefined;
    return { summary: summarizeProfile(file), rate };
  } finally {
    await api.stop();
  }
}

export function profileOutcome(p: ProfileRun): Outcome {
  const topArea = p.summary.areas[0];
  return {
    targets: [],
    figures: [{ name: 'profile', text: `${fmt(p.rate)} polls/s under the profiler; largest self-time area ${topArea ? `${topArea.name} ${topArea.pct.toFixed(1)} %` : 'n/a'}` }],
  };
}
