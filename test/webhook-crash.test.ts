import { describe, expect, it } from 'vitest';
import type { Simulator } from '../tools/simulator/server.ts';
import {
  configFile,
  enqueue,
  keys,
  outboxDrained,
  readEvents,
  spawnDaemon,
  tally,
  testEnv,
  waitFor,
  waitForEvents,
  type SpawnedDaemon,
  useSuite,
} from './kit/harness.ts';
import { newSecret, type Receiver } from './kit/receiver.ts';

/**
 * The real binary (`node src/main.ts run`) killed with SIGKILL while webhook deliveries are in
 * flight to a slow endpoint, then restarted: deliveries live in Redis (the outbox, leased), so
 * every event still reaches the receiver at least once, signed.
 */

const OUTCOMES = ['completed', 'failed', 'cancelled'] as const;
const RUNS = 100;

const { redis, simulator, receiver } = useSuite();

describe('webhooks across kill -9 of the daemon', () => {
  it('SIGKILL twice during slow deliveries, restart: all 100 events received (distinct webhook-ids), all signed', async () => {
    const secret = newSecret();
    const sim: Simulator = await simulator();
    const rx: Receiver = await receiver({ secrets: [secret], respond: () => ({ status: 200, delayMs: 300 }) });

    const env = testEnv({
      LETTA_BASE_URL: sim.url,
      WATCHER_WEBHOOK_SECRET: secret,
      WATCHER_CONFIG: configFile({
        // Short leases, so what a killed daemon held comes due again within the test (a lease
        // must outlast one poll and one delivery attempt, hence the short timeouts).
        letta: { requestTimeoutMs: 500, retries: 0 },
        poll: { leaseMs: 1500 },
        webhooks: {
          targets: [{ url: `${rx.url}/hook`, name: 'main' }],
          scheduleMs: [0, 100, 200, 400, 800, 1600, 3200, 6400],
          concurrency: 32,
          attemptTimeoutMs: 1000,
          leaseMs: 1500,
        },
      }),
    });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const runs = Array.from({ length: RUNS }, (_, i) => sim.createRun({ durationMs: (i * 13) % 800, outcome: OUTCOMES[i % 3] ?? 'completed' }));
    await enqueue(redis, prefix, runs.map((r) => r.id));

    let daemon: SpawnedDaemon = spawnDaemon(env);
    const distinct = () => rx.distinctIds('/hook').size;
    /** Until `done`, or the daemon exits (then the assertion after it fails with its output). */
    const until = async (done: () => boolean, timeoutMs: number) => {
      await waitFor(() => done() || daemon.child.exitCode !== null, { timeoutMs, describe: state });
      expect(daemon.child.exitCode, daemon.output()).toBeNull();
    };
    const state = () => `${distinct()} distinct of ${RUNS}, ${rx.requests.length} requests\n${daemon.output().slice(-2000)}`;

    // Kill while requests are in flight (the receiver holds each for 300 ms).
    for (const killAt of [15, 50]) {
      await until(() => distinct() >= killAt, 15_000);
      const inFlight = rx.requests.filter((r) => r.status === undefined).length;
      expect(inFlight, 'deliveries in flight at the kill').toBeGreaterThan(0);
      await daemon.kill9();
      expect(distinct()).toBeLessThan(RUNS);
      daemon = spawnDaemon(env);
    }

    await until(() => distinct() === RUNS, 25_000);
    const k = keys(prefix);
    await outboxDrained(redis, prefix, 10_000);
    await daemon.stop();

    const events = await waitForEvents(redis, prefix, RUNS);
    const t = tally(await readEvents(redis, prefix), runs.map((r) => r.id));
    expect({ missing: t.missing, duplicated: t.duplicated, unexpected: t.unexpected, total: t.total }).toEqual({
      missing: [],
      duplicated: [],
      unexpected: [],
      total: RUNS,
    });
    expect(rx.distinctIds('/hook')).toEqual(new Set(events.map((e) => e.event.id)));
    expect(rx.deliveredIds('/hook').size).toBe(RUNS);
    const unsigned = rx.requests.filter((r) => !r.verified).map((r) => ({ seq: r.seq, id: r.id, errors: r.verifyErrors }));
    expect(unsigned).toEqual([]);
    expect(rx.requests.length).toBeGreaterThanOrEqual(RUNS);
    expect(await redis.llen(k.dead)).toBe(0);
  });
});
