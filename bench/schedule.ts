import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { defineScripts } from '../src/redis/scripts.ts';
import { makeIntakeStore } from '../src/intake/store.ts';
import { makeRunStore, type ClaimBatch } from '../src/polling/runs.ts';
import { KEYS, LAYOUT } from './config.ts';
import { waitFor, type DaemonProcess } from './support.ts';

/**
 * The bench's side of the schedule: emptying Redis between sections, pushing intake entries,
 * the daemon's own intake and claim run from here, and watching a daemon take entries in.
 */

export async function reset(r: Redis): Promise<void> {
  await r.flushall('SYNC');
  await r.config('RESETSTAT');
}

/** LPUSHes `n` bare run IDs, pipelined (1,000 per LPUSH, 100 LPUSHes per round trip). */
export async function pushIntake(r: Redis, n: number): Promise<number> {
  const t0 = performance.now();
  let left = n;
  while (left > 0) {
    const pipe = r.pipeline();
    for (let c = 0; c < 100 && left > 0; c++) {
      const k = Math.min(1000, left);
      pipe.lpush(KEYS.intake, ...Array.from({ length: k }, () => `run-${randomUUID()}`));
      left -= k;
    }
    await pipe.exec();
  }
  return performance.now() - t0;
}

/** The daemon's own intake and claim, on the bench's connection. */
export interface Schedule {
  take(): Promise<{ taken: number }>;
  claim(limit: number, leaseMs: number): Promise<ClaimBatch>;
}

export function makeSchedule(r: Redis): Schedule {
  const ctx = { client: r, scripts: defineScripts(r), layout: LAYOUT, replica: 'bench' };
  const intake = makeIntakeStore(ctx, {
    batch: 10_000, batchBytes: 64 << 20, defaultMaxWatchMs: 86_400_000, maxEntryBytes: 65_536, maxWatchCapMs: 30 * 86_400_000, maxDepth: 32, maxTargetsPerRun: 16,
  });
  const runs = makeRunStore(ctx);
  return { take: () => intake.take(), claim: (limit, leaseMs) => runs.claim(0, limit, leaseMs) };
}

/** Fills the schedule through the intake path (the daemon's own intake script), from here. */
export async function fillViaIntake(r: Redis, schedule: Schedule, n: number): Promise<void> {
  await pushIntake(r, n);
  for (;;) {
    const res = await schedule.take();
    if (res.taken === 0) break;
  }
  const z = await r.zcard(KEYS.due);
  if (z !== n) throw new Error(`fill: expected ${n} runs in the schedule, found ${z}`);
}

export async function redisNow(r: Redis): Promise<number> {
  const [s, us] = await r.time();
  return Number(s) * 1000 + Math.floor(Number(us) / 1000);
}

/**
 * Samples LLEN/ZCARD every 5 ms while a daemon takes `n` intake entries in: when the first
 * left the list, and when the last was in the schedule (performance.now() times).
 */
export async function watchIntake(r: Redis, n: number, d: DaemonProcess, timeoutMs: number): Promise<{ first: number; last: number }> {
  let first = Number.NaN;
  const last = await waitFor(
    `${n} runs in the schedule`,
    async () => {
      const res = await r.pipeline().llen(KEYS.intake).zcard(KEYS.due).exec();
      const now = performance.now();
      const llen = Number(res?.[0]?.[1] ?? n);
      const zcard = Number(res?.[1]?.[1] ?? 0);
      if (Number.isNaN(first) && (llen < n || zcard > 0)) first = now;
      return zcard >= n && llen === 0 ? now : undefined;
    },
    timeoutMs,
    5,
    () => (d.child.exitCode !== null ? `daemon exited with ${d.child.exitCode}: ${d.logs()}` : undefined),
  );
  return { first, last };
}
