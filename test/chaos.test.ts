import { describe, expect, it } from 'vitest';
import { formatReport, runChaos } from '../scripts/chaos.ts';
import { useSeed } from './kit/seed.ts';

/**
 * The chaos run of scripts/chaos.ts, small enough for CI: 300 runs through 3 replicas of the
 * real binary; the simulator injects 5xx, 429 with Retry-After, hung requests and malformed
 * bodies; 3 replicas are kill -9'd and restarted; the private redis-server (AOF, appendfsync
 * always) restarts once; the webhook receiver fails 30 % of first attempts and is down for 3 s. The
 * full-size run is `node scripts/chaos.ts` (2000 runs, a kill every few seconds, 20 s outage).
 */

// LRW_CHAOS_SEED, else LRW_SEED, else a fresh seed; printed before the run, so a run that
// throws still says how to repeat it. Every fault (kill times, victims, the simulator's and the
// receiver's dice) is drawn from it by scripts/chaos.ts.
const rng = useSeed({ env: 'LRW_CHAOS_SEED' });

describe('chaos (small variant)', () => {
  it('300 runs, 3 replicas, 3 kills, a Redis restart, a flaky receiver: every run exactly once, every delivery signed', async () => {
    const lines: string[] = [];
    const report = await runChaos({
      runs: 300,
      replicas: 3,
      seconds: 12,
      seed: rng.seed,
      kills: 3,
      enqueueFraction: 0.5,
      runDurationMs: [200, 4000],
      receiverFailRate: 0.3,
      receiverDownMs: 3000,
      receiverDownAt: 0.2,
      redisDownMs: 1000,
      redisRestartAt: 0.55,
      leaseMs: 1500,
      drainTimeoutMs: 35_000,
      logLevel: 'debug',
      log: (line) => lines.push(line),
    });
    const text = formatReport(report);
    // Printed either way, with the seed (LRW_CHAOS_SEED=<seed> repeats the run).
    console.log(`${lines.join('\n')}\n${text}`);

    // The faults really happened.
    expect(report.kills).toBe(3);
    expect(report.redisRestarts).toBe(1);
    expect(report.receiverOutageMs).toBeGreaterThanOrEqual(3000);
    expect(report.faults.serverErrors).toBeGreaterThan(0);
    expect(report.faults.rateLimited).toBeGreaterThan(0);
    expect(report.faults.hung).toBeGreaterThan(0);
    expect(report.webhook.failedOnPurpose).toBeGreaterThan(0);

    // Exactly one event per run in P:events.
    expect({
      events: report.events,
      duplicatesInStream: report.duplicatesInStream,
      missingEvents: report.missingEvents,
      unexpectedEvents: report.unexpectedEvents,
      wrongEventTypes: report.wrongEventTypes,
    }).toEqual({ events: 300, duplicatesInStream: 0, missingEvents: 0, unexpectedEvents: 0, wrongEventTypes: 0 });

    // Every target got every event at least once, every request signed, nothing dead-lettered.
    expect(report.webhook.distinctIdsByTarget).toEqual({ '/events': 300, '/letta': 300 });
    expect(report.webhook.missingDeliveries).toBe(0);
    expect(report.webhook.invalidSignatures).toBe(0);
    expect(report.deadLetters).toBe(0);
    expect({ outbox: report.outboxLeft, schedule: report.scheduleLeft }).toEqual({ outbox: 0, schedule: 0 });

    expect(report.badApiPaths).toBe(0);
    expect(report.secretsScan.hits).toEqual([]);
    expect(report.exitCodes).toEqual([0, 0, 0]);
    expect(report.fatalLines).toBe(0);
    expect(report.checks.filter((c) => !c.ok)).toEqual([]);
  }, 90_000);
});
