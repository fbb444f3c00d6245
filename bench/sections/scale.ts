import { setTimeout as sleep } from 'node:timers/promises';
import type { Redis } from 'ioredis';
import { CONCURRENCY, KEYS, LEASE_MS } from '../config.ts';
import { note, verdict } from '../output.ts';
import { fillViaIntake, makeSchedule, pushIntake, reset, watchIntake, type Schedule } from '../schedule.ts';
import { commandStats, fmt, percentile, rssOf, startApiServer, startDaemon, statDelta, usedMemory } from '../support.ts';
import type { BenchContext, ClaimCost, Outcome, Scale, Sizes } from '../types.ts';

/**
 * 4. Scale: Redis memory per watched run, the daemon's RSS while it polls a large schedule, and
 * what a claim of 256 due runs costs as the schedule grows.
 */

async function timeClaims(sizes: Sizes, r: Redis, schedule: Schedule, size: number): Promise<ClaimCost> {
  if ((3 + sizes.claimSamples) * 256 > size) throw new Error(`claim cost: ${size} runs cannot fill ${3 + sizes.claimSamples} claims of 256`);
  for (let i = 0; i < 3; i++) await schedule.claim(256, LEASE_MS); // loads the script
  const before = await commandStats(r);
  const times: number[] = [];
  let claimed = Number.POSITIVE_INFINITY;
  for (let i = 0; i < sizes.claimSamples; i++) {
    const t0 = performance.now();
    const res = await schedule.claim(256, LEASE_MS);
    times.push(performance.now() - t0);
    claimed = Math.min(claimed, res.claims.length);
  }
  const after = await commandStats(r);
  const ev = statDelta(before, after).get('evalsha') ?? { calls: 1, usec: Number.NaN };
  times.sort((a, b) => a - b);
  return { size, medianMs: percentile(times, 50), p90Ms: percentile(times, 90), redisUsPerCall: ev.usec / ev.calls, claimed };
}

export async function benchScale({ redis, sizes }: BenchContext): Promise<Scale> {
  const r = redis.client;
  const schedule = makeSchedule(r);
  const claims: ClaimCost[] = [];
  const smallBytesPerRun: Scale['smallBytesPerRun'] = [];
  for (const size of sizes.claimSizes) {
    await reset(r);
    const base = await usedMemory(r);
    await fillViaIntake(r, schedule, size);
    smallBytesPerRun.push({ size, bytes: ((await usedMemory(r)) - base) / size });
    claims.push(await timeClaims(sizes, r, schedule, size));
  }

  const n = sizes.scaleN;
  const api = await startApiServer(0);
  try {
    await reset(r);
    const base = await usedMemory(r);
    note(`scale: pushing ${fmt(n)} intake entries`);
    await pushIntake(r, n);
    const d = startDaemon({ redisUrl: redis.url, apiUrl: api.url, env: { WATCHER_CONCURRENCY: String(CONCURRENCY) }, config: {} });
    let result: Omit<Scale, 'claims' | 'smallBytesPerRun'>;
    try {
      const { first, last } = await watchIntake(r, n, d, 600_000);
      note(`scale: ${fmt(n)} runs watched; polling for ${sizes.scalePollS} s`);
      let rssMax = 0;
      const s0 = await api.stats();
      const end = performance.now() + sizes.scalePollS * 1000;
      while (performance.now() < end) {
        rssMax = Math.max(rssMax, rssOf(d.pid)?.rss ?? 0);
        await sleep(200);
      }
      const s1 = await api.stats();
      const peak = rssOf(d.pid)?.peak ?? Number.NaN;
      const used = await usedMemory(r);
      const zcard = await r.zcard(KEYS.due);
      if (zcard !== n) throw new Error(`scale: ${zcard} runs in the schedule, expected ${n}`);
      result = {
        n,
        bytesPerRun: (used - base) / n,
        usedMemoryMB: used / 1e6,
        intakeRate: (n * 1000) / (last - first),
        intakeS: (last - first) / 1000,
        rssMaxMB: (rssMax * 2 ** 20) / 1e6,
        rssPeakMB: (peak * 2 ** 20) / 1e6,
        pollRate: (s1.requests - s0.requests) / ((s1.t - s0.t) / 1000),
      };
      const stop = await d.stop();
      if (stop.code !== 0) throw new Error(`daemon exited with ${stop.code}: ${d.logs()}`);
    } finally {
      await d.stop();
    }
    claims.push(await timeClaims(sizes, r, schedule, n));
    return { ...result, claims, smallBytesPerRun };
  } finally {
    await api.stop();
  }
}

export function scaleOutcome(s: Scale): Outcome {
  const { n, claims } = s;
  const memMet = s.bytesPerRun <= 512;
  const rssMet = s.rssMaxMB <= 200;
  const firstClaim = claims[0];
  const lastClaim = claims[claims.length - 1];
  const growth = firstClaim && lastClaim ? lastClaim.redisUsPerCall / firstClaim.redisUsPerCall : Number.NaN;
  const flat = growth <= 2;
  const allFull = claims.every((c) => c.claimed === 256);
  return {
    targets: [
      { figure: `Redis memory per watched run (${fmt(n)} watched)`, target: '≤ 512 B', value: `${fmt(s.bytesPerRun)} B`, met: memMet },
      { figure: `Daemon RSS with ${fmt(n)} watched, polling`, target: '≤ 200 MB', value: `${s.rssMaxMB.toFixed(1)} MB`, met: rssMet },
      {
        figure: `Claim of 256 due runs, ${claims.map((c) => fmt(c.size)).join(' / ')} watched`,
        target: 'flat',
        value: `${claims.map((c) => `${fmt(c.redisUsPerCall)} µs`).join(' / ')} in Redis (×${growth.toFixed(2)})`,
        met: flat && allFull,
      },
    ],
    figures: [
      { name: 'redis-memory', text: `${fmt(s.bytesPerRun)} bytes of Redis used_memory per watched run at ${fmt(n)} watched (target ≤ 512: ${verdict(memMet)})` },
      {
        name: 'daemon-rss',
        text: `${s.rssMaxMB.toFixed(1)} MB RSS (max sampled) with ${fmt(n)} watched while polling at ${fmt(s.pollRate)} polls/s (target ≤ 200 MB: ${verdict(rssMet)})`,
      },
      {
        name: 'claim-cost',
        text: `${claims.map((c) => `${fmt(c.size)} watched: ${c.medianMs.toFixed(2)} ms median round trip, ${fmt(c.redisUsPerCall)} µs in Redis`).join('; ')} (growth ×${growth.toFixed(2)}, flat: ${verdict(flat && allFull)})`,
      },
      { name: 'scale-intake', text: `${fmt(n)} runs into the schedule in ${s.intakeS.toFixed(1)} s = ${fmt(s.intakeRate)} runs/s while the daemon polls` },
    ],
  };
}
