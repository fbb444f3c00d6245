import { describe, expect, it } from 'vitest';
import type { Config } from '../src/config.ts';
import type { DaemonDeps } from '../src/daemon.ts';
import { eventId, type WatchEvent } from '../src/events/event.ts';
import type { Simulator } from '../tools/simulator/server.ts';
import {
  expectExactlyOnce,
  configFile,
  enqueue,
  keys,
  readDead,
  readEvents,
  redisNow,
  settledEvents as settled,
  startApiIn,
  startDaemon as startIn,
  testConfig,
  waitFor,
  type StreamEvent,
  useSuite,
} from './kit/harness.ts';
import { createRuns, type Runs } from './kit/runs.ts';

/**
 * The watch engine in-process (the Daemon composition root) against the simulator and a real
 * Redis: every test counts what reached `P:events` exactly. Durations, outcomes and the
 * simulator's faults are drawn from the suite's seed (printed; LRW_SEED=<seed> repeats them).
 */

const NAIVE_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const { redis, cleanup, rng, simulator } = useSuite();
const startDaemon = (config: Config, extra: Partial<DaemonDeps> = {}) => startIn(cleanup, config, extra);
const settledEvents = (prefix: string, expected: number, timeoutMs = 20_000) => settled(redis, prefix, expected, { timeoutMs });

/** Runs of random durations in `durationMs` and random outcomes, drawn from the seed. */
function drawnRuns(sim: Simulator, n: number, durationMs: readonly [number, number]): Runs {
  return createRuns(sim, n, { durationMs, outcome: 'drawn', random: rng.random });
}

function byRun(events: readonly StreamEvent[]): Map<string, WatchEvent> {
  return new Map(events.map(({ event }) => [event.data.run_id, event]));
}

describe('watch engine (in-process daemon, simulator, real Redis)', () => {
  it('500 runs with random durations and outcomes give exactly 500 events, each per the contract', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const runs = drawnRuns(sim, 500, [50, 1500]);
    await startDaemon(config);
    await enqueue(redis, prefix, [...runs.keys()]);

    const events = await settledEvents(prefix, 500, 30_000);
    expect(events).toHaveLength(500);
    expectExactlyOnce(events, runs.keys());

    for (const { event } of events) {
      const created = runs.get(event.data.run_id);
      expect(created, event.data.run_id).toBeDefined();
      if (!created) continue;
      expect(event.type).toBe(`run.${created.outcome}`);
      expect(event.id).toBe(eventId(created.id, event.type));
      expect(event.id).toMatch(/^evt_[0-9a-f]+$/);
      expect(event.timestamp).toMatch(ISO);
      expect(event.data.agent_id).toBe(created.agentId);
      expect(event.data.status).toBe(created.outcome);
      expect(event.data.metadata).toBeNull();
      const run = event.data.run;
      expect(run).not.toBeNull();
      expect(run?.id).toBe(created.id);
      expect(run?.agent_id).toBe(created.agentId);
      expect(run?.status).toBe(created.outcome);
      expect(event.data.stop_reason).toBe(run?.stop_reason ?? null);
      expect(run?.completed_at).toMatch(NAIVE_UTC);
      // Letta's callback bookkeeping rides along unchanged.
      expect(run).toHaveProperty('callback_status_code', null);
      expect(event.data.watch.polls).toBeGreaterThanOrEqual(1);
      expect(event.data.watch.polls).toBeLessThanOrEqual(sim.pollsOf(created.id));
      expect(event.data.watch.enqueued_at).toMatch(ISO);
      expect(event.data.watch.detected_at).toBe(event.timestamp);
      expect(Date.parse(event.data.watch.detected_at)).toBeGreaterThanOrEqual(Date.parse(event.data.watch.enqueued_at));
      // Detected no earlier than the run finished (the simulator and the daemon share a clock).
      expect(Date.parse(event.data.watch.detected_at)).toBeGreaterThanOrEqual(created.finishesAt ?? Infinity);
    }
    // Nothing left behind for finished runs.
    expect(await redis.hlen(keys(prefix).runs)).toBe(0);
  });

  it('a run pushed three times (bare and JSON) while watched is watched once and gives one event with the metadata', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    const run = sim.createRun({ durationMs: 2000, outcome: 'completed' });
    const metadata = { order: 42, tags: ['a', 'b'], nested: { ok: true } };
    const daemon = await startDaemon(config);

    await enqueue(redis, prefix, [JSON.stringify({ run_id: run.id, metadata })]);
    await waitFor(async () => (await redis.zscore(k.due, run.id)) !== null);
    await enqueue(redis, prefix, [run.id, JSON.stringify({ run_id: run.id, metadata: { other: 'ignored' } })]);
    await waitFor(async () => (await redis.llen(k.intake)) === 0);
    // Still watched (the run takes 2 s), and only once.
    expect(await redis.zcard(k.due)).toBe(1);
    expect((await readEvents(redis, prefix)).length).toBe(0);

    const events = await settledEvents(prefix, 1);
    expect(events).toHaveLength(1);
    const event = events[0]?.event;
    expect(event?.type).toBe('run.completed');
    expect(event?.data.run_id).toBe(run.id);
    expect(event?.data.metadata).toEqual(metadata);
    // Every poll the simulator answered for this run belongs to this one watch.
    expect(event?.data.watch.polls).toBe(sim.pollsOf(run.id));
    const intake = await daemon.metrics.registry.getSingleMetric('letta_watcher_intake_total')?.get();
    const count = (result: string) => intake?.values.find((v) => v.labels['result'] === result)?.value ?? 0;
    expect({ accepted: count('accepted'), duplicate: count('duplicate'), rejected: count('rejected') }).toEqual({
      accepted: 1,
      duplicate: 2,
      rejected: 0,
    });
  });

  it('an unknown run id gives run.not_found', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const id = 'run-00000000-0000-4000-8000-000000000404';
    await startDaemon(config);
    await enqueue(redis, prefix, [id]);

    const events = await settledEvents(prefix, 1);
    expect(events).toHaveLength(1);
    const event = events[0]?.event;
    expect(event?.type).toBe('run.not_found');
    expect(event?.id).toBe(eventId(id, 'run.not_found'));
    expect(event?.data).toMatchObject({ run_id: id, run: null, agent_id: null, status: null, metadata: null });
    expect(event?.data.watch.polls).toBe(1);
    expect(sim.stats().byStatus['404']).toBe(1);
  });

  it('a stretch of 503s and 429s delays events but loses none', async () => {
    const sim = await simulator();
    // Half the answers are 429 (Retry-After: 1), the other half 500/502/503: no poll can succeed.
    sim.setFaults({ rateLimitRate: 0.5, errorRate: 1, retryAfterSeconds: 1 });
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    const runs = drawnRuns(sim, 60, [100, 600]);
    await startDaemon(config);
    await enqueue(redis, prefix, [...runs.keys()]);

    // Every run has met the faults more than once, and all of them are done by now.
    await waitFor(() => [...runs.keys()].every((id) => sim.pollsOf(id) >= 2), {
      timeoutMs: 20_000,
      describe: () => `polls: ${JSON.stringify(sim.stats())}`,
    });
    await waitFor(() => [...runs.values()].every((r) => (r.finishesAt ?? Infinity) <= Date.now()));
    expect((await readEvents(redis, prefix)).length).toBe(0);
    expect(await redis.zcard(k.due)).toBe(60);
    const during = sim.stats().byStatus;
    expect(during['200'] ?? 0).toBe(0);

    sim.setFaults({ rateLimitRate: 0, errorRate: 0 });
    const events = await settledEvents(prefix, 60, 30_000);
    expect(events).toHaveLength(60);
    expectExactlyOnce(events, runs.keys());
    for (const { event } of events) expect(event.type).toBe(`run.${runs.get(event.data.run_id)?.outcome}`);
    expect(await readDead(redis, prefix)).toEqual([]);

    const seen = sim.stats().byStatus;
    expect(seen['429'] ?? 0).toBeGreaterThan(0);
    expect((seen['500'] ?? 0) + (seen['502'] ?? 0) + (seen['503'] ?? 0)).toBeGreaterThan(0);
    expect(seen['200'] ?? 0).toBeGreaterThanOrEqual(60);
  });

  it('a run still running after its max_watch_ms gives run.expired with the last Run seen', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const run = sim.createRun({ outcome: 'never' });
    await startDaemon(config);
    await enqueue(redis, prefix, [JSON.stringify({ run_id: run.id, max_watch_ms: 300, metadata: { why: 'expiry' } })]);

    const events = await settledEvents(prefix, 1);
    expect(events).toHaveLength(1);
    const event = events[0]?.event;
    expect(event?.type).toBe('run.expired');
    expect(event?.id).toBe(eventId(run.id, 'run.expired'));
    expect(event?.data.status).toBe('running');
    expect(event?.data.run?.status).toBe('running');
    expect(event?.data.run?.id).toBe(run.id);
    expect(event?.data.agent_id).toBe(run.agentId);
    expect(event?.data.metadata).toEqual({ why: 'expiry' });
    expect(event?.data.watch.polls).toBeGreaterThanOrEqual(2);
    const watched = Date.parse(event?.data.watch.detected_at ?? '') - Date.parse(event?.data.watch.enqueued_at ?? '');
    expect(watched).toBeGreaterThanOrEqual(300);
  });

  it('accepts a Run whose every field but id, agent_id and status is null, with a naive completed_at', async () => {
    const bodies: Record<string, unknown>[] = [];
    const api = await startApiIn(cleanup, (req, res) => {
      const id = decodeURIComponent((req.url ?? '').split('?')[0]?.split('/').pop() ?? '');
      const body = {
        id,
        agent_id: 'agent-x',
        status: 'completed',
        created_at: null,
        completed_at: '2025-10-17T21:53:05.123456',
        conversation_id: null,
        base_template_id: null,
        background: null,
        metadata: null,
        request_config: null,
        stop_reason: null,
        callback_url: null,
        callback_sent_at: null,
        callback_status_code: null,
        callback_error: null,
        ttft_ns: null,
        total_duration_ns: null,
      };
      bodies.push(body);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
    const config = testConfig({ LETTA_BASE_URL: api.url });
    const prefix = config.redis.keyPrefix;
    const id = 'run-nullish-0001';
    await startDaemon(config);
    await enqueue(redis, prefix, [id]);

    const events = await settledEvents(prefix, 1);
    expect(events).toHaveLength(1);
    const event = events[0]?.event;
    expect(event?.type).toBe('run.completed');
    expect(event?.data).toMatchObject({ run_id: id, agent_id: 'agent-x', status: 'completed', stop_reason: null });
    expect(event?.data.run).toEqual(bodies[0]);
    expect(await readDead(redis, prefix)).toEqual([]);
  });

  it('invalid intake entries go to P:dead with a reason; valid ones in the same batch still get events', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const good = [...drawnRuns(sim, 6, [50, 300]).values()];
    const g = (i: number) => good[i]?.id ?? '';
    const oversize = JSON.stringify({ run_id: 'run-oversize', metadata: { pad: 'x'.repeat(70_000) } });
    const invalid: Record<string, string> = {
      'bad id': 'run with spaces!',
      'leading dash': '-run-123',
      'id too long': `r${'x'.repeat(128)}`,
      'not JSON': '{"run_id": "run-1",',
      'run_id a number': '{"run_id": 123}',
      'run_id missing': '{"metadata": {"a": 1}}',
      'max_watch_ms a string': '{"run_id": "run-wrong-type-1", "max_watch_ms": "300"}',
      'max_watch_ms negative': '{"run_id": "run-wrong-type-2", "max_watch_ms": -5}',
      'metadata a string': '{"run_id": "run-wrong-type-3", "metadata": "text"}',
      'metadata an array': '{"run_id": "run-meta-array", "metadata": [1, 2]}',
      'webhook_url not http': '{"run_id": "run-bad-url", "webhook_url": "ftp://example.com/x"}',
      'oversize entry': oversize,
    };
    expect(oversize.length).toBeGreaterThan(64 * 1024);
    const valid = [
      g(0),
      JSON.stringify({ run_id: g(1), metadata: { n: 1 } }),
      `  ${g(2)}  `,
      JSON.stringify({ run_id: g(3), max_watch_ms: 60_000, metadata: null }),
    ];
    // Interleave good and bad entries in one batch.
    const bad = Object.values(invalid);
    const batch: string[] = [];
    for (let i = 0; i < Math.max(bad.length, valid.length); i++) {
      if (bad[i] !== undefined) batch.push(bad[i] as string);
      if (valid[i] !== undefined) batch.push(valid[i] as string);
    }
    // One LPUSH: the daemon sees them all in one intake batch.
    await redis.lpush(keys(prefix).intake, ...batch);
    const daemon = await startDaemon(config);

    const events = await settledEvents(prefix, 4);
    expectExactlyOnce(events, [g(0), g(1), g(2), g(3)]);
    expect(byRun(events).get(g(1))?.data.metadata).toEqual({ n: 1 });

    const dead = await readDead(redis, prefix);
    const rejected = (raw: string) => dead.find((d) => d.entry === raw.slice(0, 1024));
    const problems: string[] = [];
    for (const [what, raw] of Object.entries(invalid)) {
      const d = rejected(raw);
      if (!d) problems.push(`${what}: not dead-lettered`);
      else if (d.kind !== 'intake' || typeof d.reason !== 'string' || d.reason.length === 0 || Number.isNaN(Date.parse(d.at))) {
        problems.push(`${what}: malformed dead letter ${JSON.stringify(d)}`);
      }
    }
    expect(problems).toEqual([]);
    expect(dead).toHaveLength(bad.length);
    expect(rejected(oversize)?.reason).toMatch(/bytes/);

    // The daemon keeps going: a later entry is still watched.
    expect(daemon.state).toBe('running');
    await enqueue(redis, prefix, [g(4)]);
    const after = await settledEvents(prefix, 5);
    expectExactlyOnce(after, [g(0), g(1), g(2), g(3), g(4)]);
  });

  it('metadata [] (an empty JSON array) is rejected like any other array', async () => {
    // Lua's cjson decodes [] and {} to the same empty table, so `metadata[1] ~= nil` cannot
    // tell them apart; the contract says metadata is a JSON object.
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const good = sim.createRun({ durationMs: 50, outcome: 'completed' });
    const entry = '{"run_id": "run-meta-empty-array", "metadata": []}';
    await enqueue(redis, prefix, [entry, good.id]);
    await startDaemon(config);

    const events = await settledEvents(prefix, 1);
    expectExactlyOnce(events, [good.id]);
    const dead = await readDead(redis, prefix);
    expect(dead.map((d) => ({ kind: d.kind, entry: d.entry }))).toEqual([{ kind: 'intake', entry }]);
  });

  it.each([
    ['without a key', undefined],
    ['with the wrong key', 'wrong-key'],
  ])('401 from the API pauses polling without dropping runs (daemon %s)', async (_label, apiKey) => {
    const sim = await simulator();
    sim.setApiKey('k');
    const config = testConfig({
      LETTA_BASE_URL: sim.url,
      LETTA_API_KEY: apiKey,
      WATCHER_CONFIG: configFile({ letta: { authPauseMs: 200 } }),
    });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    const runs = drawnRuns(sim, 20, [50, 200]);
    const daemon = await startDaemon(config);
    await enqueue(redis, prefix, [...runs.keys()]);

    // Every run met the 401, and the paused daemon kept probing (more 401s than runs).
    await waitFor(() => (sim.stats().byStatus['401'] ?? 0) >= 26, {
      timeoutMs: 15_000,
      describe: () => JSON.stringify(sim.stats()),
    });
    expect((await readEvents(redis, prefix)).length).toBe(0);
    expect(await redis.zcard(k.due)).toBe(20);
    expect(await readDead(redis, prefix)).toEqual([]);
    expect(daemon.state).toBe('running');
    expect(sim.stats().byStatus['200'] ?? 0).toBe(0);

    sim.setApiKey(undefined);
    const events = await settledEvents(prefix, 20);
    expectExactlyOnce(events, runs.keys());
    for (const { event } of events) expect(event.type).toBe(`run.${runs.get(event.data.run_id)?.outcome}`);
  });

  it.each([
    ['the polls finish within the grace period', 10_000, 300],
    // Answers 3 s away: a stop that waited for them would take 3 s, over graceMs + 2000.
    ['the grace period runs out and the polls are aborted', 100, 3000],
  ])('graceful stop during in-flight polls hands every unfinished run back (%s)', async (_label, graceMs, latencyMs) => {
    const sim = await simulator({ faults: { latencyMs } });
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_SHUTDOWN_GRACE_MS: String(graceMs) });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    const runs = drawnRuns(sim, 80, [2500, 4000]);
    const first = await startDaemon(config);
    await enqueue(redis, prefix, [...runs.keys()]);

    // Polls are in flight: the simulator has requests it has not answered yet.
    await waitFor(() => sim.stats().requests >= 20 && sim.stats().requests > Object.values(sim.stats().byStatus).reduce((a, b) => a + b, 0));
    const began = Date.now();
    await first.stop();
    const stopMs = Date.now() - began;
    expect(first.state).toBe('stopped');
    expect(stopMs).toBeLessThan(graceMs + 2000);

    const events = await readEvents(redis, prefix);
    const done = new Set(events.map((e) => e.event.data.run_id));
    const now = await redisNow(redis);
    const scores = new Map<string, number>();
    const flat = await redis.zrange(k.due, '0', '-1', 'WITHSCORES');
    for (let i = 0; i + 1 < flat.length; i += 2) scores.set(flat[i] as string, Number(flat[i + 1]));
    const problems: string[] = [];
    for (const id of runs.keys()) {
      const score = scores.get(id);
      if (done.has(id)) {
        if (score !== undefined) problems.push(`${id}: has an event and is still scheduled`);
      } else if (score === undefined) {
        problems.push(`${id}: neither an event nor in the schedule`);
      } else if (score > now + 1000) {
        problems.push(`${id}: not handed back (due in ${score - now} ms)`);
      } else if ((await redis.hexists(k.runs, id)) !== 1) {
        problems.push(`${id}: scheduled without its run state`);
      }
    }
    expect(problems).toEqual([]);
    expect(scores.size).toBeGreaterThan(0);
    expect(await redis.llen(k.intake)).toBe(0);

    await startDaemon(config);
    const all = await settledEvents(prefix, 80);
    expectExactlyOnce(all, runs.keys());
  });
});
