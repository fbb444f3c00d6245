import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { Daemon } from '../src/daemon.ts';
import type { Simulator } from '../tools/simulator/server.ts';
import {
  expectExactlyOnce,
  configFile,
  enqueue,
  keys,
  readEvents,
  shortLease,
  spawnDaemon,
  startDaemon,
  testConfig,
  testEnv,
  waitFor,
  waitForEvents,
  type SpawnedDaemon,
  useSuite,
} from './kit/harness.ts';
import { freePort, startRedisServer, type RedisServer } from './kit/redis-server.ts';
import { createRuns, Runs } from './kit/runs.ts';

/**
 * Outages around the daemon. Redis goes away for a while, two ways: for 8 s (the 30 s of the
 * issue with LRW_LONG=1) under the binary, where commands time out and leases bring the runs
 * back: /readyz says so the whole time, the process does not crash, and once Redis is back every
 * run gets exactly one event; and for 2 s under the in-process daemon with the default lease,
 * where commands wait and are re-sent, so a re-sent claim must give back the same runs. The
 * Letta API answers 401: polling pauses (the test counts the requests during the pause), /readyz
 * names the credentials, and when the key works again polling resumes and every event arrives.
 * These are the suite's Redis outages while runs are watched (ops.test.ts checks the HTTP
 * endpoints, secrets.test.ts what a restart logs, crash.test.ts a start-up without Redis).
 * Durations are drawn from the suite's seed (printed; LRW_SEED=<seed> repeats them).
 */

const LONG = process.env['LRW_LONG'] === '1';
const REDIS_OUTAGE_MS = LONG ? 30_000 : 8000;

const { redis, cleanup, rng, simulator } = useSuite();

/** `n` runs lasting a drawn time in `durationMs`, outcomes in turn; added to `into`, their IDs returned. */
function addRuns(sim: Simulator, n: number, durationMs: readonly [number, number], into: Runs): string[] {
  const batch = createRuns(sim, n, { durationMs, random: rng.random });
  for (const [id, r] of batch) into.set(id, r);
  return batch.ids;
}

interface Probe {
  status: number;
  body: string;
}

async function probe(port: number, path: string): Promise<Probe> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(3000) });
    return { status: res.status, body: await res.text() };
  } catch (err) {
    return { status: 0, body: String(err) };
  }
}

describe('outages', () => {
  it(`Redis down for ${REDIS_OUTAGE_MS / 1000} s: /readyz false throughout, no crash, every run exactly once afterwards`, async () => {
    const server: RedisServer = await startRedisServer();
    cleanup.add(() => server.destroy());
    const producer = new Redis(server.url, { maxRetriesPerRequest: null });
    producer.on('error', () => {});
    cleanup.add(() => producer.disconnect());
    const sim = await simulator();
    const port = await freePort();
    const env = testEnv({
      REDIS_URL: server.url,
      LETTA_BASE_URL: sim.url,
      WATCHER_HTTP_HOST: '127.0.0.1',
      WATCHER_HTTP_PORT: String(port),
      WATCHER_LOG_LEVEL: 'info',
      WATCHER_CONFIG: configFile(shortLease(1000)),
    });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const k = keys(prefix);
    const daemon: SpawnedDaemon = spawnDaemon(env);
    await daemon.ready();
    expect((await probe(port, '/readyz')).status).toBe(200);

    // Runs that end before, during and after the outage.
    const runs = new Runs();
    await enqueue(producer, prefix, addRuns(sim, 150, [0, REDIS_OUTAGE_MS + 4000], runs));
    await waitFor(async () => (await producer.xlen(k.events)) >= 10, { timeoutMs: 15_000, describe: () => daemon.output().slice(-2000) });

    await server.stop();
    const downAt = Date.now();
    await waitFor(async () => (await probe(port, '/readyz')).status === 503, { timeoutMs: 5000 });
    const readyz: Probe[] = [];
    const healthz: Probe[] = [];
    while (Date.now() - downAt < REDIS_OUTAGE_MS) {
      readyz.push(await probe(port, '/readyz'));
      healthz.push(await probe(port, '/healthz'));
      await sleep(500);
    }
    expect(daemon.child.exitCode).toBeNull();
    expect(readyz.length).toBeGreaterThanOrEqual(Math.floor(REDIS_OUTAGE_MS / 1000));
    expect(readyz.filter((r) => r.status === 503 && /Redis/.test(r.body))).toHaveLength(readyz.length);
    // The loops keep turning while they retry: alive, just not ready.
    expect(healthz.filter((r) => r.status === 200)).toHaveLength(healthz.length);

    await server.start();
    await waitFor(async () => (await probe(port, '/readyz')).status === 200, { timeoutMs: 20_000, describe: () => daemon.output().slice(-2000) });
    // New work after the outage is taken too.
    await enqueue(producer, prefix, addRuns(sim, 50, [0, 1000], runs));
    await waitFor(
      async () => (await producer.xlen(k.events)) >= runs.size && (await producer.zcard(k.due)) === 0 && (await producer.llen(k.intake)) === 0,
      { timeoutMs: 30_000, describe: async () => `${await producer.xlen(k.events)} of ${runs.size} events, ${await producer.zcard(k.due)} watched` },
    );
    expectExactlyOnce(await readEvents(producer, prefix), runs.keys(), runs);
    expect(await producer.llen(k.dead)).toBe(0);

    expect(await daemon.stop(), daemon.output().slice(-2000)).toBe(0);
    expect(daemon.output()).not.toMatch(/"level":60|fatal:/);
    expect(daemon.output()).toContain('Redis connection error; reconnecting');
    expect(await readEvents(producer, prefix)).toHaveLength(runs.size);
  }, REDIS_OUTAGE_MS + 60_000);

  it('Redis stopped for two seconds mid-run, default lease: the in-process daemon survives, no unhandled rejection, every event exactly once', async () => {
    const server = await startRedisServer();
    cleanup.add(() => server.destroy());
    const own = new Redis(server.url, { maxRetriesPerRequest: null, retryStrategy: () => 100 });
    own.on('error', () => {});
    cleanup.add(() => own.disconnect());
    const sim = await simulator();
    // The default lease (120 s), on purpose: a claim that Redis executed but whose reply was
    // lost in the stop is re-sent by ioredis and must return the same runs (the last-claim
    // record in schedule.ts); otherwise those runs would wait out the lease and miss the
    // 30 s below.
    const config = testConfig({ LETTA_BASE_URL: sim.url, REDIS_URL: server.url });
    const prefix = config.redis.keyPrefix;
    const runs = createRuns(sim, 150, { durationMs: [300, 4000], outcome: 'drawn', random: rng.random });
    const daemon = await startDaemon(cleanup, config);
    const unhandled: unknown[] = [];
    const onUnhandled = (err: unknown) => unhandled.push(err);
    process.on('unhandledRejection', onUnhandled);
    cleanup.add(() => process.off('unhandledRejection', onUnhandled));
    await enqueue(own, prefix, runs.ids);

    const before = await waitForEvents(own, prefix, 10);
    expect(before.length).toBeLessThan(150);
    await server.stop();
    await sleep(2000); // Redis stays away for a while; the daemon keeps polling and retrying.
    expect(daemon.state).toBe('running');
    await server.start();

    const k = keys(prefix);
    await waitForEvents(own, prefix, 150, { timeoutMs: 30_000 });
    await waitFor(async () => (await own.zcard(k.due)) === 0 && (await own.llen(k.intake)) === 0, { timeoutMs: 20_000 });
    const events = await readEvents(own, prefix);
    expect(events).toHaveLength(150);
    expectExactlyOnce(events, runs.keys());
    for (const { event } of events) expect(event.type).toBe(`run.${runs.get(event.data.run_id)?.outcome}`);
    expect(daemon.state).toBe('running');
    expect(unhandled).toEqual([]);
  });

  it('Letta answers 401: polling pauses (requests counted), /readyz names the credentials, resumes when the key works again', async () => {
    const goodKey = `sk-test-${randomBytes(12).toString('hex')}`;
    const sim = await simulator({ apiKey: goodKey });
    const AUTH_PAUSE_MS = 1000;
    const port = await freePort();
    const config = testConfig({
      LETTA_BASE_URL: sim.url,
      LETTA_API_KEY: goodKey,
      WATCHER_HTTP_HOST: '127.0.0.1',
      WATCHER_HTTP_PORT: String(port),
      WATCHER_SHUTDOWN_GRACE_MS: '500',
      WATCHER_CONFIG: configFile({ ...shortLease(1000), letta: { ...(shortLease(1000)['letta'] as object), authPauseMs: AUTH_PAUSE_MS } }),
    });
    const daemon = await startDaemon(cleanup, config);
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);

    const runs = new Runs();
    await enqueue(redis, prefix, addRuns(sim, 100, [300, 6000], runs));
    await waitFor(async () => (await redis.xlen(k.events)) >= 10, { timeoutMs: 15_000 });
    expect((await probe(port, '/readyz')).status).toBe(200);

    // The key stops working.
    sim.setApiKey(`sk-test-rotated-${randomBytes(12).toString('hex')}`);
    const firstRefusal = await waitFor(
      async () => {
        const r = await probe(port, '/readyz');
        return r.status === 503 && /credentials/.test(r.body) ? Date.now() : undefined;
      },
      { timeoutMs: 10_000 },
    );
    // Polls already under way when the first 401 came back have ended after one pause.
    await waitFor(() => Date.now() - firstRefusal >= AUTH_PAUSE_MS + 200, { timeoutMs: 5000 });

    const WINDOW_MS = 4 * AUTH_PAUSE_MS;
    const requestsBefore = sim.stats().requests;
    const eventsBefore = await redis.xlen(k.events);
    const watched = await redis.zcard(k.due);
    const windowStart = Date.now();
    const readyz: Probe[] = [];
    while (Date.now() - windowStart < WINDOW_MS) {
      readyz.push(await probe(port, '/readyz'));
      await sleep(200);
    }
    const requestsDuring = sim.stats().requests - requestsBefore;
    const elapsed = Date.now() - windowStart;
    expect(watched).toBeGreaterThan(20);
    // Paused: at most one probe per authPauseMs (plus one at the edge), however many runs wait.
    // (soft: the rest of the test still says whether polling resumes and nothing was lost)
    expect.soft(requestsDuring, `${requestsDuring} API requests in ${elapsed} ms while paused with ${watched} runs watched`).toBeLessThanOrEqual(
      Math.ceil(elapsed / AUTH_PAUSE_MS) + 1,
    );
    expect(requestsDuring, 'the pause still probes the API').toBeGreaterThanOrEqual(1);
    expect(await redis.xlen(k.events)).toBe(eventsBefore);
    // Not ready the whole time, and the reason is the credentials.
    expect(readyz.filter((r) => r.status === 503 && /credentials/.test(r.body)).map((r) => r.status)).toEqual(readyz.map(() => 503));
    expect(await metricValue(daemon, 'letta_watcher_auth_paused')).toBe(1);

    // The key works again: polling resumes by itself, nothing was dropped.
    sim.setApiKey(goodKey);
    await waitFor(async () => (await probe(port, '/readyz')).status === 200, { timeoutMs: 10_000 });
    await waitFor(async () => (await redis.xlen(k.events)) >= runs.size && (await redis.zcard(k.due)) === 0, {
      timeoutMs: 20_000,
      describe: async () => `${await redis.xlen(k.events)} of ${runs.size} events`,
    });
    expectExactlyOnce(await readEvents(redis, prefix), runs.keys(), runs);
    expect(await redis.llen(k.dead)).toBe(0);
    expect(await metricValue(daemon, 'letta_watcher_auth_paused')).toBe(0);
  }, 60_000);
});

async function metricValue(daemon: Daemon, name: string): Promise<number | undefined> {
  const line = (await daemon.metrics.registry.metrics()).split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}
