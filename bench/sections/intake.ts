import { CONCURRENCY } from '../config.ts';
import { verdict } from '../output.ts';
import { pushIntake, reset, watchIntake } from '../schedule.ts';
import { fmt, startApiServer, startDaemon } from '../support.ts';
import type { BenchContext, Intake, Outcome } from '../types.ts';

/**
 * 3. Intake rate: bare run IDs LPUSHed before the daemon starts, and the time from the first
 * entry leaving the list to the last one in the schedule.
 */

export async function benchIntake({ redis, sizes }: BenchContext): Promise<Intake> {
  const r = redis.client;
  const api = await startApiServer(0);
  try {
    await reset(r);
    const n = sizes.intakeN;
    const lpushMs = await pushIntake(r, n);
    const spawnAt = performance.now();
    const d = startDaemon({ redisUrl: redis.url, apiUrl: api.url, env: { WATCHER_CONCURRENCY: String(CONCURRENCY) }, config: {} });
    try {
      const { first, last } = await watchIntake(r, n, d, 120_000);
      const stop = await d.stop();
      if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
      return { n, lpushMs, firstToLastMs: last - first, spawnToLastMs: last - spawnAt, rate: (n * 1000) / (last - first) };
    } finally {
      await d.stop();
    }
  } finally {
    await api.stop();
  }
}

export function intakeOutcome(i: Intake): Outcome {
  const met = i.rate >= 20_000;
  return {
    targets: [{ figure: 'Intake rate', target: '≥ 20,000 runs/s', value: `${fmt(i.rate)} runs/s`, met }],
    figures: [
      { name: 'intake-rate', text: `${fmt(i.n)} runs into the schedule in ${(i.firstToLastMs / 1000).toFixed(2)} s = ${fmt(i.rate)} runs/s (target ≥ 20,000: ${verdict(met)})` },
    ],
  };
}
