import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { parseLettaTime } from '../src/letta/run-state.ts';
import type { Config } from '../src/config.ts';
import type { Simulator } from '../tools/simulator/server.ts';
import { freePort } from './kit/redis-server.ts';
import {
  captureLogger,
  configFile,
  expectExactlyOnce,
  keys,
  metric,
  readEvents,
  spawnDaemon,
  startApiIn,
  startDaemon,
  testConfig,
  testEnv,
  useSuite,
  waitFor,
  waitForEvents,
  type EnvOverrides,
  type StreamEvent,
} from './kit/harness.ts';

/**
 * Knowing within seconds, with few API calls: reconciliation with the list of active runs,
 * Letta's callback as a hint, takeover after a crash, one API budget for the fleet, webhooks
 * catching up when an endpoint recovers. Each test measures what a user would notice: the lag
 * from a run's end to its event, and the requests made per run.
 */
// The simulator's dice (durations, dropped callbacks) come from the suite's seed (printed).
const { redis, cleanup, simulator, receiver } = useSuite();

/** Lag (ms) from each run's completed_at to its event. */
function lags(events: readonly StreamEvent[]): number[] {
  return events
    .map((e) => Date.parse(e.event.data.watch.detected_at) - (parseLettaTime(e.event.data.run?.completed_at) ?? Number.NaN))
    .filter((x) => !Number.isNaN(x))
    .sort((a, b) => a - b);
}
const p = (xs: readonly number[], q: number) => xs[Math.min(xs.length - 1, Math.ceil((q / 100) * xs.length) - 1)] ?? Number.NaN;

/** A config whose own cadence alone would be slow to tell: the first re-poll 20 s after intake. */
function slowCadence(extra: EnvOverrides = {}, file: Record<string, unknown> = {}): Config {
  return testConfig({
    WATCHER_POLL_INITIAL_MS: '20000',
    WATCHER_POLL_MAX_MS: '30000',
    WATCHER_RECONCILE_MS: '300',
    WATCHER_CONFIG: configFile(file),
    ...extra,
  });
}

describe('reconciliation with the list of active runs', () => {
  it('finds runs that ended within about a second although their next poll is 20 s out, with ≤ 3 requests a run', async () => {
    const sim = await simulator({ durationMs: [500, 4000], faults: { listLagMs: 200 } });
    const config = slowCadence({ LETTA_BASE_URL: sim.url });
    const runs = Array.from({ length: 40 }, () => sim.createRun({ outcome: 'completed' }));
    await startDaemon(cleanup, config);
    await redis.lpush(keys(config.redis.keyPrefix).intake, ...runs.map((r) => r.id));
    const events = await waitForEvents(redis, config.redis.keyPrefix, 40, { timeoutMs: 15_000 });
    expectExactlyOnce(events, runs.map((r) => r.id));
    const l = lags(events);
    const s = sim.stats();
    const polls = runs.map((r) => sim.pollsOf(r.id));
    console.log(`reconcile: lag p50 ${p(l, 50)} ms, p99 ${p(l, 99)} ms; requests ${s.requests} (${s.listRequests} lists) for ${runs.length} runs; polls per run max ${Math.max(...polls)}`);
    expect(p(l, 99)).toBeLessThan(2000);
    expect(Math.max(...polls)).toBeLessThanOrEqual(3);
    expect((s.requests - s.listRequests) / runs.length).toBeLessThanOrEqual(2.5);
  });

  it('pushes out the polls of runs the list shows, and a stale list only delays an ending by the safety gap', async () => {
    // The list lags 60 s: it shows every run as running long after it ended.
    const sim = await simulator({ faults: { listLagMs: 60_000 } });
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_RECONCILE_MS: '200', WATCHER_SAFETY_GAP_MS: '2500', WATCHER_POLL_INITIAL_MS: '100', WATCHER_POLL_MAX_MS: '200' });
    const runs = Array.from({ length: 10 }, () => sim.createRun({ durationMs: 1500, outcome: 'failed' }));
    await startDaemon(cleanup, config);
    await redis.lpush(keys(config.redis.keyPrefix).intake, ...runs.map((r) => r.id));
    const events = await waitForEvents(redis, config.redis.keyPrefix, 10, { timeoutMs: 15_000 });
    expectExactlyOnce(events, runs.map((r) => r.id));
    const l = lags(events);
    const polls = runs.map((r) => sim.pollsOf(r.id));
    console.log(`stale list: lag p50 ${p(l, 50)} ms, max ${p(l, 100)} ms; polls per run ${polls.join(',')}`);
    // A 200 ms cadence would poll each run about 10 times in its 1.5 s; the list held them off.
    expect(Math.max(...polls)).toBeLessThanOrEqual(4);
    // And the ending came through by the safety gap, not never.
    expect(p(l, 100)).toBeLessThan(3000);
  });

  it('never pushes a listed run past its deadline: a run watched for 1.5 s expires on time', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_RECONCILE_MS: '200' });
    const run = sim.createRun({ outcome: 'never' });
    await startDaemon(cleanup, config);
    const t0 = Date.now();
    await redis.lpush(keys(config.redis.keyPrefix).intake, JSON.stringify({ run_id: run.id, max_watch_ms: 1500 }));
    const events = await waitForEvents(redis, config.redis.keyPrefix, 1, { timeoutMs: 10_000 });
    expect(events[0]?.event.type).toBe('run.expired');
    expect(Date.now() - t0).toBeLessThan(4000);
  });

  it('with a full page only runs newer than its oldest are decided; older ones keep their cadence', async () => {
    const sim = await simulator({ faults: { listLagMs: 0 } });
    // A page of 5. Five old runs end; then five that go on fill the page; then one more ends.
    const config = slowCadence({ LETTA_BASE_URL: sim.url }, { letta: { listLimit: 5 } });
    const old = Array.from({ length: 5 }, () => sim.createRun({ durationMs: 1500, outcome: 'completed' }));
    await sleep(20);
    const going = Array.from({ length: 5 }, () => sim.createRun({ outcome: 'never' }));
    await sleep(20);
    const recent = sim.createRun({ durationMs: 1500, outcome: 'failed' });
    await startDaemon(cleanup, config);
    await redis.lpush(keys(config.redis.keyPrefix).intake, ...[...old, ...going, recent].map((r) => r.id));
    const events = await waitForEvents(redis, config.redis.keyPrefix, 1, { timeoutMs: 10_000 });
    // The recent one is told within a second or so of its end; the old ones, beyond the full
    // page, wait for their 20 s re-poll (the list cannot say they ended).
    await sleep(2000);
    expect((await readEvents(redis, config.redis.keyPrefix)).map((e) => e.event.data.run_id)).toEqual([recent.id]);
    expect(events).toHaveLength(1);
  });

  it('a run missing from the list but still going (another organisation, say) costs one extra poll, not one per pass', async () => {
    // An API whose list never shows anything, while its runs stay running.
    const requests: string[] = [];
    const api = await startApiIn(cleanup, (req, res) => {
      requests.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      if ((req.url ?? '').startsWith('/v1/runs/?')) return res.end('[]');
      const id = (req.url ?? '').split('/').pop() ?? '';
      res.end(JSON.stringify({ id, agent_id: 'a', status: 'running', created_at: new Date().toISOString() }));
    });
    const config = slowCadence({ LETTA_BASE_URL: api.url, WATCHER_RECONCILE_MS: '100' });
    await startDaemon(cleanup, config);
    await redis.lpush(keys(config.redis.keyPrefix).intake, 'run-elsewhere');
    await sleep(3000);
    const polls = requests.filter((r) => r.endsWith('/run-elsewhere')).length;
    const lists = requests.filter((r) => r.startsWith('/v1/runs/?')).length;
    // The first poll at intake, one more when the list first misses it; then its 20 s cadence.
    expect(polls).toBe(2);
    expect(lists).toBeGreaterThan(15);
  });

  it('a Letta API that cannot list runs turns reconciliation off with one log line; polling goes on', async () => {
    const api = await startApiIn(cleanup, (req, res) => {
      if ((req.url ?? '').startsWith('/v1/runs/?')) return res.writeHead(405, { 'content-type': 'application/json' }).end('{"detail":"Method Not Allowed"}');
      const id = (req.url ?? '').split('/').pop() ?? '';
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id, agent_id: 'a', status: 'completed', completed_at: new Date().toISOString() }));
    });
    const { log, lines } = captureLogger('warn');
    const config = testConfig({ LETTA_BASE_URL: api.url, WATCHER_RECONCILE_MS: '100' });
    const daemon = await startDaemon(cleanup, config, { log });
    await redis.lpush(keys(config.redis.keyPrefix).intake, 'run-a');
    await waitForEvents(redis, config.redis.keyPrefix, 1);
    await waitFor(async () => (await metric(daemon.registry, 'letta_watcher_reconcile_enabled')) === 0);
    await redis.lpush(keys(config.redis.keyPrefix).intake, 'run-b');
    await waitForEvents(redis, config.redis.keyPrefix, 2);
    expect(lines.filter((l) => String(l['msg']).includes('does not list runs'))).toHaveLength(1);
  });

  it('two replicas fetch the list about once per interval between them, not once each', async () => {
    const lists: number[] = [];
    const sim = await simulator({ onRequest: (path) => (path.startsWith('/v1/runs/?') ? lists.push(Date.now()) : undefined) });
    const env = testEnv({ LETTA_BASE_URL: sim.url, WATCHER_RECONCILE_MS: '500', WATCHER_LOG_LEVEL: 'info' });
    const a = spawnDaemon(env);
    const b = spawnDaemon(env);
    await Promise.all([a.ready(), b.ready()]);
    await redis.lpush(keys(env['WATCHER_KEY_PREFIX'] ?? '').intake, ...Array.from({ length: 5 }, () => sim.createRun({ outcome: 'never' }).id));
    await sleep(1000);
    const from = lists.length;
    await sleep(5000);
    const n = lists.length - from;
    console.log(`two replicas, 500 ms interval: ${n} list requests in 5 s`);
    expect(n).toBeGreaterThanOrEqual(8);
    expect(n).toBeLessThanOrEqual(11);
  });
});

describe("Letta's callback as a hint", () => {
  async function withCallbacks(sim: Simulator, extra: EnvOverrides = {}) {
    const token = 'cb-token-0123456789abcdef';
    const config = slowCadence({ LETTA_BASE_URL: sim.url, WATCHER_CALLBACK_TOKEN: token, WATCHER_HTTP_PORT: '0', WATCHER_HTTP_HOST: '127.0.0.1', WATCHER_RECONCILE_MS: '0', ...extra });
    // WATCHER_HTTP_PORT=0 turns the server off; take a free one.
    const port = await freePort();
    const daemon = await startDaemon(cleanup, { ...config, http: { host: '127.0.0.1', port } });
    return { daemon, token, url: `http://127.0.0.1:${port}/callbacks/letta?token=${token}`, base: `http://127.0.0.1:${port}/callbacks/letta`, prefix: config.redis.keyPrefix };
  }

  it('a callback makes the run due at once: p50 lag under 0.5 s with 20 % of callbacks dropped, and every run still gets its event', async () => {
    const sim = await simulator({ durationMs: [300, 3000], faults: { callbackDropRate: 0.2 } });
    // Reconciliation every 5 s finds the runs whose callback was dropped, but alone it would
    // give a p50 of seconds: the threshold below holds only if the callbacks work.
    const w = await withCallbacks(sim, { WATCHER_RECONCILE_MS: '5000' });
    const runs = Array.from({ length: 40 }, () => sim.createRun({ outcome: 'completed', callbackUrl: w.url }));
    await redis.lpush(keys(w.prefix).intake, ...runs.map((r) => r.id));
    const events = await waitForEvents(redis, w.prefix, 40, { timeoutMs: 20_000 });
    expectExactlyOnce(events, runs.map((r) => r.id));
    const l = lags(events);
    console.log(`callbacks (20 % dropped): lag p50 ${p(l, 50)} ms, p99 ${p(l, 99)} ms; callbacks ${JSON.stringify(sim.stats().callbacks)}`);
    expect(p(l, 50)).toBeLessThan(500);
    expect(sim.stats().callbacks.dropped).toBeGreaterThan(0);
    expect(await metric(w.daemon.registry, 'letta_watcher_callback_hints_total', 'result="accepted"')).toBe(sim.stats().callbacks.sent);
  });

  it('a wrong token is refused (401) and moves nothing; an unknown run is ignored (202); a forged hint costs one poll and no event; hints are rate-limited', async () => {
    const sim = await simulator();
    const w = await withCallbacks(sim, { WATCHER_CONFIG: configFile({ callbacks: { ratePerSecond: 5 } }) });
    const run = sim.createRun({ outcome: 'never' });
    await redis.lpush(keys(w.prefix).intake, run.id);
    await waitFor(() => sim.pollsOf(run.id) === 1);
    await sleep(200);
    const before = await redis.zscore(keys(w.prefix).due, run.id);
    const post = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    for (const bad of [`${w.base}?token=wrong`, w.base, `${w.base}?token=${w.token}x`]) expect((await post(bad, { run_id: run.id, status: 'completed' })).status).toBe(401);
    expect(await redis.zscore(keys(w.prefix).due, run.id)).toBe(before);
    expect((await post(w.url, { run_id: 'run-nobody-watches', status: 'completed' })).status).toBe(202);
    expect((await post(w.url, { status: 'completed' })).status).toBe(400);
    // Forged: the run is still going. One poll, no event.
    expect((await post(w.url, { run_id: run.id, status: 'completed' })).status).toBe(202);
    await waitFor(() => sim.pollsOf(run.id) === 2);
    await sleep(300);
    expect(sim.pollsOf(run.id)).toBe(2);
    expect(await readEvents(redis, w.prefix)).toHaveLength(0);
    const codes: number[] = [];
    for (let i = 0; i < 20; i++) codes.push((await post(w.url, { run_id: 'run-x', status: 'completed' })).status);
    expect(codes).toContain(429);
    expect(await metric(w.daemon.registry, 'letta_watcher_callback_hints_total', 'result="unauthorized"')).toBe(3);
  });
});

describe('takeover after a crash', () => {
  it('the runs a killed replica held are polled by another within 10 s', async () => {
    // Answers take 3 s, so every run is in flight when the replica dies.
    const sim = await simulator({ faults: { latencyMs: 3000 } });
    const env = testEnv({ LETTA_BASE_URL: sim.url, WATCHER_LOG_LEVEL: 'info' });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const runs = Array.from({ length: 20 }, () => sim.createRun({ outcome: 'never' }));
    const first = spawnDaemon(env);
    await first.ready();
    await redis.lpush(keys(prefix).intake, ...runs.map((r) => r.id));
    await waitFor(() => runs.every((r) => sim.pollsOf(r.id) >= 1));
    await first.kill9();
    const killedAt = Date.now();
    const second = spawnDaemon(env);
    await second.ready();
    await waitFor(() => runs.every((r) => sim.pollsOf(r.id) >= 2), { timeoutMs: 20_000 });
    const took = Date.now() - killedAt;
    console.log(`takeover: every run held by the killed replica polled again ${took} ms after the kill`);
    expect(took).toBeLessThanOrEqual(10_000);
    expect(await second.stop()).toBe(0);
  });
});

describe('one API budget for the fleet', () => {
  it('two replicas with WATCHER_API_RPS=15 make at most 15 requests in any one-second window, start-up included', async () => {
    const times: number[] = [];
    const sim = await simulator({ onRequest: () => times.push(performance.now()) });
    const env = testEnv({ LETTA_BASE_URL: sim.url, WATCHER_API_RPS: '15', WATCHER_RECONCILE_MS: '500', WATCHER_LOG_LEVEL: 'info' });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    await redis.lpush(keys(prefix).intake, ...Array.from({ length: 200 }, () => sim.createRun({ outcome: 'never' }).id));
    const a = spawnDaemon(env);
    const b = spawnDaemon(env);
    await Promise.all([a.ready(), b.ready()]);
    await sleep(6000);
    let worst = 0;
    for (let i = 0, j = 0; i < times.length; i++) {
      while ((times[i] ?? 0) - (times[j] ?? 0) >= 1000) j++;
      worst = Math.max(worst, i - j + 1);
    }
    const rate = times.length / ((times[times.length - 1]! - times[0]!) / 1000);
    console.log(`API budget 15/s, two replicas: ${times.length} requests, worst one-second window ${worst}, mean ${rate.toFixed(1)}/s`);
    expect(worst).toBeLessThanOrEqual(15);
    expect(rate).toBeGreaterThan(8);
  });

  it('429s slow the whole fleet down, and the rate climbs back', async () => {
    const sim = await simulator({ faults: { rateLimitRate: 1, retryAfterSeconds: 1 } });
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_API_RPS: '40' });
    const daemon = await startDaemon(cleanup, config);
    await redis.lpush(keys(config.redis.keyPrefix).intake, ...Array.from({ length: 50 }, () => sim.createRun({ outcome: 'never' }).id));
    await waitFor(async () => (await metric(daemon.registry, 'letta_watcher_api_budget_rps')) < 10, { timeoutMs: 15_000 });
    const low = await metric(daemon.registry, 'letta_watcher_api_budget_rps');
    sim.setFaults({ rateLimitRate: 0 });
    await waitFor(async () => (await metric(daemon.registry, 'letta_watcher_api_budget_rps')) > 30, { timeoutMs: 15_000 });
    console.log(`AIMD: budget fell to ${low.toFixed(2)}/s under 429s, then climbed back above 30/s`);
  });
});

describe('webhooks catch up when an endpoint recovers', () => {
  it('after an outage the deliveries waiting on their 5-minute retry arrive within seconds of the first success', async () => {
    const sim = await simulator();
    const rx = await receiver({ secrets: [] });
    await rx.down();
    const config = testConfig({
      LETTA_BASE_URL: sim.url,
      WATCHER_WEBHOOK_URLS: `${rx.url}/hook`,
      WATCHER_CONFIG: configFile({ webhooks: { scheduleMs: [0, 1500, 300_000, 300_000] } }),
    });
    const runs = Array.from({ length: 60 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }));
    await startDaemon(cleanup, config);
    await redis.lpush(keys(config.redis.keyPrefix).intake, ...runs.map((r) => r.id));
    await waitForEvents(redis, config.redis.keyPrefix, 60);
    // Every delivery failed twice: its next try is 5 minutes out.
    await waitFor(async () => {
      const attempts = await redis.hvals(keys(config.redis.keyPrefix).attempts);
      return attempts.length === 60 && attempts.every((a) => Number(a.split(':')[0]) >= 2);
    }, { timeoutMs: 15_000 });
    await rx.up();
    const up = Date.now();
    // A new run's first delivery succeeds, and the endpoint's backlog follows it.
    await redis.lpush(keys(config.redis.keyPrefix).intake, sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await waitFor(() => rx.deliveredIds('/hook').size === 61, { timeoutMs: 20_000, describe: () => `${rx.deliveredIds('/hook').size} of 61` });
    console.log(`catch-up: 60 waiting deliveries arrived ${Date.now() - up} ms after the endpoint came back`);
    expect(Date.now() - up).toBeLessThan(10_000);
  });
});
