import { describe, expect, it } from 'vitest';
import { manualClock } from '../../src/clock.ts';
import type { LettaClient } from '../../src/letta/client.ts';
import { makeLogger } from '../../src/log.ts';
import { makeMetrics } from '../../src/ops/metrics.ts';
import { makeApiGate } from '../../src/polling/api-gate.ts';
import { makePoller } from '../../src/polling/poller.ts';
import type { RunClaim, RunStore } from '../../src/polling/runs.ts';
import type { RedisHealth } from '../../src/redis/health.ts';

/**
 * While polling is paused for credentials, each probe interval lets exactly one run through to
 * the API. With several partitions the first one a claim tries may be empty; the probe must
 * still go to the run claimed from the next.
 */
const PROBE_MS = 30_000;
const T0 = 1_000_000;

/** Lets promise chains run, and the settle batcher's flush (a real timer of a few ms). */
async function settle(): Promise<void> {
  await new Promise((r) => setTimeout(r, 30));
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** A poller over two partitions, paused for credentials; partition 1 holds one run due at `firstDue`. */
function pausedPoller(firstDue: number) {
  const clock = manualClock(T0);
  const log = makeLogger('silent');
  const gate = makeApiGate({ clock, probeEveryMs: PROBE_MS, log, baseUrl: 'https://letta.test' });
  gate.pause('credentials', 'it answered 401');

  // Partition 1 holds one run, due at dueAt unless leased; partition 0 is empty.
  let dueAt = firstDue;
  const claim: RunClaim = { runId: 'run-1', partition: 1, counter: '1', enqueuedAt: T0, deadline: T0 + 86_400_000, polls: 0, createdAt: undefined, stalledAt: undefined };
  const runs = {
    async claim(p: number) {
      const now = clock.now();
      if (p !== 1 || dueAt > now) return { now, nextDue: p === 1 ? dueAt : undefined, claims: [] };
      dueAt = Infinity;
      return { now, nextDue: undefined, claims: [claim] };
    },
    async settle(_p: number, ops: readonly { kind: string; delayMs?: number }[]) {
      for (const op of ops) if (op.kind === 'reschedule') dueAt = clock.now() + (op.delayMs ?? 0);
      return ops.map(() => true);
    },
    renew: async (_p: number, list: readonly unknown[]) => list.map(() => true),
    entryOf: async () => null,
  } as unknown as RunStore;
  const seen = { requests: 0 };
  const client = {
    async getRun() {
      seen.requests++;
      return { kind: 'auth', status: 401 };
    },
  } as unknown as LettaClient;
  const health: RedisHealth = { report: () => ({ cause: 'other', message: '' }) as never, recovered: () => {} };
  const poller = makePoller({
    runs,
    partitions: 2,
    client,
    gate,
    clock,
    log,
    metrics: makeMetrics(),
    health,
    options: { initialMs: 1000, maxMs: 30_000, factor: 1.6, jitter: 0, concurrency: 4, maxRps: 0, leaseMs: 8000, claimBatch: 16, probeEveryMs: PROBE_MS, firstDeliveryMs: 0, stalledAfterMs: 0 },
    targetsFor: () => [],
    onEvent: () => {},
  });
  poller.start();
  return {
    clock,
    seen,
    async stop() {
      const stopping = poller.stop(0);
      clock.advance(PROBE_MS);
      await stopping;
    },
  };
}

describe('the poller while the API gate is paused', () => {
  it('probes with the run of partition 1 when partition 0 is empty, once per interval', async () => {
    const { clock, seen, stop } = pausedPoller(T0);
    await settle();
    expect(seen.requests, 'no request before the first probe is due').toBe(0);
    for (let probe = 1; probe <= 3; probe++) {
      clock.advance(PROBE_MS);
      await settle();
      expect(seen.requests, `after probe interval ${probe}`).toBe(probe);
    }
    await stop();
  });

  it('a probe that found nothing due is kept for the run that comes due just after', async () => {
    const { clock, seen, stop } = pausedPoller(T0 + PROBE_MS + 50);
    await settle();
    clock.advance(PROBE_MS);
    await settle();
    expect(seen.requests, 'nothing was due at the probe').toBe(0);
    clock.advance(50);
    await settle();
    expect(seen.requests, 'the run that came due 50 ms later carried the probe').toBe(1);
    // And the interval still holds: no second probe until the next one is due.
    clock.advance(PROBE_MS - 100);
    await settle();
    expect(seen.requests).toBe(1);
    await stop();
  });
});
