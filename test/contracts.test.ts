import { Redis } from 'ioredis';
import { describe, expect, inject, it } from 'vitest';
import { intakeLimits } from '../src/config.ts';
import { deliveryDeadLetter, listDeadLetters, replayDeadLetters, runDeadLetter, type ReplayResult } from '../src/dead-letters.ts';
import { eventId } from '../src/events/event.ts';
import {
  configFile,
  enqueue,
  keys,
  metric,
  outboxDrained,
  readDead,
  readEvents,
  runCli,
  settledEvents,
  startApiIn,
  startDaemon,
  storeFor,
  testConfig,
  testEnv,
  useSuite,
  waitFor,
  waitForDead,
} from './kit/harness.ts';
import { createRuns } from './kit/runs.ts';

/**
 * Contracts users rely on that no other suite pins down: what happens to a run the Letta API
 * refuses (400, 422), what each `dead purge` selector removes, and that two replays of the same
 * dead letters at once replay each letter once. Every fault is real: a stand-in API on loopback
 * answers 400 and 422, a receiver answers 500, two Redis connections (or two CLI processes)
 * race on the same letters.
 */

const { redis, cleanup, simulator, receiver } = useSuite();

const JSON_TYPE = { 'content-type': 'application/json' };

describe('a run ID the Letta API refuses (400 or 422)', () => {
  it('is dead-lettered (kind "run", the reason naming the status), its watch state dropped, no event and no webhook; other runs go on', async () => {
    const refused400 = 'run-refused-by-letta-400';
    const refused422 = 'run-refused-by-letta-422';
    const accepted = 'run-accepted-by-letta';
    const polls = new Map<string, number>();
    // A stand-in Letta: 400 as Letta answers an ID it cannot parse, 422 as FastAPI answers a
    // path parameter that fails validation; the third run completes.
    const api = await startApiIn(cleanup, (req, res) => {
      const path = (req.url ?? '').split('?')[0] ?? '';
      const id = decodeURIComponent(path.startsWith('/v1/runs/') ? path.slice('/v1/runs/'.length) : '');
      polls.set(id, (polls.get(id) ?? 0) + 1);
      if (id === refused400) return void res.writeHead(400, JSON_TYPE).end('{"detail":"Invalid run ID format"}');
      if (id === refused422) {
        return void res
          .writeHead(422, JSON_TYPE)
          .end(JSON.stringify({ detail: [{ type: 'string_pattern_mismatch', loc: ['path', 'run_id'], msg: "String should match pattern '^run-[a-f0-9-]+$'", input: id }] }));
      }
      if (id === accepted) {
        return void res.writeHead(200, JSON_TYPE).end(
          JSON.stringify({ id, agent_id: 'agent-1', status: 'completed', stop_reason: 'end_turn', created_at: '2026-01-01T00:00:00.000Z', completed_at: '2026-01-01T00:00:01.000000' }),
        );
      }
      res.writeHead(404, JSON_TYPE).end('{"detail":"Run not found"}');
    });
    const rx = await receiver({ secrets: [] });
    const config = testConfig({
      LETTA_BASE_URL: api.url,
      WATCHER_CONFIG: configFile({ webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'hook' }], scheduleMs: [0, 50, 100] } }),
    });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    const withMetadata = JSON.stringify({ run_id: refused422, metadata: { order: 7 } });
    const daemon = await startDaemon(cleanup, config);
    await enqueue(redis, prefix, [refused400, withMetadata, accepted]);

    const dead = await waitForDead(redis, prefix, 2);
    const events = await settledEvents(redis, prefix, 1);
    await outboxDrained(redis, prefix);

    // One dead letter per refused run, kind "run", naming the status; the entry as it was pushed.
    const byEntry = new Map(dead.map((d) => [d.entry, d]));
    expect(dead).toHaveLength(2);
    for (const [entry, status] of [[refused400, 400], [withMetadata, 422]] as const) {
      const d = byEntry.get(entry);
      expect(d, `dead letter of ${entry}: ${JSON.stringify(dead)}`).toBeDefined();
      expect(d?.kind).toBe('run');
      expect(d?.reason).toMatch(new RegExp(`\\b${status}\\b`));
      expect(Date.parse(d?.at ?? '')).not.toBeNaN();
    }
    // No event for either, and nothing left of their watch.
    expect(events.map((e) => [e.event.data.run_id, e.event.type])).toEqual([[accepted, 'run.completed']]);
    for (const id of [refused400, refused422]) {
      expect({
        due: await redis.zscore(k.due, id),
        runs: await redis.hexists(k.runs, id),
        entries: await redis.hexists(k.entries, id),
        created: await redis.zscore(k.created, id),
      }, id).toEqual({ due: null, runs: 0, entries: 0, created: null });
    }
    // The webhook target heard of the completed run only.
    expect(rx.deliveredIds('/hook')).toEqual(new Set([eventId(accepted, 'run.completed')]));
    expect(rx.requests).toHaveLength(1);
    // Refused once, asked once: the ID is not polled again.
    await new Promise((r) => setTimeout(r, 1000));
    expect({ [refused400]: polls.get(refused400), [refused422]: polls.get(refused422) }).toEqual({ [refused400]: 1, [refused422]: 1 });
    expect(await metric(daemon.registry, 'letta_watcher_dead_letters_total', 'kind="run"')).toBe(2);
    expect(await readDead(redis, prefix)).toHaveLength(2);
  });
});

describe('dead purge removes exactly what it names', () => {
  /** Letters as the daemon writes them, one a month from January (index 0 is the newest). */
  const MONTHS = ['2026-01', '2026-02', '2026-03', '2026-04', '2026-05', '2026-06'];

  async function fill(prefix: string): Promise<void> {
    const letters = MONTHS.map((m, i) =>
      i % 2 === 0
        ? JSON.stringify({ kind: 'intake', reason: `letter ${m}`, at: `${m}-01T00:00:00.000Z`, entry: `bad/${m}`, entry_bytes: 10 })
        : runDeadLetter(`letter ${m}`, new Date(`${m}-01T00:00:00.000Z`), `run-${m}`),
    );
    // LPUSH, oldest first: as the daemon adds them.
    for (const l of letters) await redis.lpush(keys(prefix).dead, l);
  }

  /** What `dead list` shows (reasons, newest first), and what the list holds. */
  async function left(env: Record<string, string>, prefix: string): Promise<string[]> {
    const r = await runCli(['dead', 'list', '--json'], env);
    expect(r.code, r.out).toBe(0);
    const listed = (JSON.parse(r.stdout) as { reason: string }[]).map((d) => d.reason);
    expect((await readDead(redis, prefix)).map((d) => d.reason)).toEqual(listed);
    return listed;
  }

  async function purge(env: Record<string, string>, ...args: string[]): Promise<string> {
    const r = await runCli(['dead', 'purge', ...args], env);
    expect(r.code, r.out).toBe(0);
    return r.stdout.trim();
  }

  it('--index N removes the Nth as dead list numbers them, --before TIME those strictly older, --all every one', async () => {
    const env = testEnv();
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    await fill(prefix);
    const reasons = (ms: string[]) => ms.map((m) => `letter ${m}`);
    expect(await left(env, prefix)).toEqual(reasons(['2026-06', '2026-05', '2026-04', '2026-03', '2026-02', '2026-01']));

    // --index: 1 is the second newest; several at once; one past the end removes nothing.
    expect(await purge(env, '--index', '1')).toBe('purged 1 dead letters');
    expect(await left(env, prefix)).toEqual(reasons(['2026-06', '2026-04', '2026-03', '2026-02', '2026-01']));
    expect(await purge(env, '--index', '0', '--index', '3')).toBe('purged 2 dead letters');
    expect(await left(env, prefix)).toEqual(reasons(['2026-04', '2026-03', '2026-01']));
    expect(await purge(env, '--index', '3')).toBe('purged 0 dead letters');
    expect(await left(env, prefix)).toEqual(reasons(['2026-04', '2026-03', '2026-01']));

    // --before: strictly before the time (a letter at the very instant stays), a date is midnight UTC.
    expect(await purge(env, '--before', '2025-12-31T23:59:59Z')).toBe('purged 0 dead letters');
    expect(await purge(env, '--before', '2026-03-01T00:00:00Z')).toBe('purged 1 dead letters');
    expect(await left(env, prefix)).toEqual(reasons(['2026-04', '2026-03']));
    expect(await purge(env, '--before', '2026-03-02')).toBe('purged 1 dead letters');
    expect(await left(env, prefix)).toEqual(reasons(['2026-04']));

    // --all, on a fresh set.
    await fill(prefix);
    expect(await left(env, prefix)).toHaveLength(MONTHS.length + 1);
    expect(await purge(env, '--all')).toBe(`purged ${MONTHS.length + 1} dead letters`);
    expect(await left(env, prefix)).toEqual([]);
    expect(await redis.exists(keys(prefix).dead)).toBe(0);
  });
});

describe('two replays of the same dead letters at once', () => {
  it('replay each letter once: one delivery recorded per letter, each webhook sent once, each run watched once', async () => {
    const sim = await simulator();
    let healthy = false;
    const rx = await receiver({ secrets: [], respond: () => (healthy ? { status: 200 } : { status: 500, body: 'down' }) });
    const config = testConfig({
      LETTA_BASE_URL: sim.url,
      WATCHER_CONFIG: configFile({ webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'hook' }], scheduleMs: [0, 50] } }),
    });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    // 30 runs whose webhooks fail twice and are dead-lettered, by the daemon.
    const delivered = createRuns(sim, 30);
    const first = await startDaemon(cleanup, config);
    await enqueue(redis, prefix, delivered.ids);
    await waitForDead(redis, prefix, 30, { timeoutMs: 20_000 });
    await outboxDrained(redis, prefix);
    await first.stop();
    const events = await readEvents(redis, prefix);
    expect(events).toHaveLength(30);
    // And 5 runs the API had refused (letters as the daemon writes them).
    const refused = createRuns(sim, 5);
    for (const id of refused.ids) await redis.lpush(k.dead, runDeadLetter('Letta API answered 400: it does not accept this run ID', new Date(), id));

    // Two operators list the same letters, then replay them at the same time, on two connections.
    const a = new Redis(inject('redisUrl'));
    const b = new Redis(inject('redisUrl'));
    cleanup.add(() => a.quit());
    cleanup.add(() => b.quit());
    const [ctxA, ctxB] = [storeFor(a, prefix), storeFor(b, prefix)];
    const [listA, listB] = await Promise.all([listDeadLetters(ctxA), listDeadLetters(ctxB)]);
    expect(listA).toHaveLength(35);
    expect(listB).toHaveLength(35);
    const limits = intakeLimits(config);
    const results: ReplayResult[] = await Promise.all([replayDeadLetters(ctxA, limits, listA), replayDeadLetters(ctxB, limits, listB)]);
    expect(results.map((r) => r.skipped)).toEqual([[], []]);
    expect(results.reduce((n, r) => n + r.replayed, 0)).toBe(35);
    expect(results.reduce((n, r) => n + r.gone, 0)).toBe(35);

    // One delivery recorded per letter (not two), and each refused run watched once.
    expect(await redis.llen(k.dead)).toBe(0);
    expect((await redis.zrange(k.webhooks, '0', '-1')).sort()).toEqual(events.map((e) => `${e.event.id}\ng:hook`).sort());
    for (const { event } of events) expect(await redis.hget(k.payloads, `${event.id}#n`), event.id).toBe('1');
    expect((await redis.zrange(k.due, '0', '-1')).sort()).toEqual([...refused.ids].sort());

    // The endpoint is back: each replayed webhook arrives once, each replayed run has one event.
    healthy = true;
    const failedRequests = rx.requests.length;
    await startDaemon(cleanup, config);
    const all = await settledEvents(redis, prefix, 35);
    await waitFor(() => rx.deliveredIds('/hook').size === 35, { timeoutMs: 20_000, describe: () => `${rx.deliveredIds('/hook').size} of 35 delivered` });
    await outboxDrained(redis, prefix);
    expect(all.map((e) => e.event.data.run_id).sort()).toEqual([...delivered.ids, ...refused.ids].sort());
    const after = rx.requests.slice(failedRequests);
    expect(after).toHaveLength(35);
    expect(new Set(after.map((r) => r.id)).size).toBe(35);
    expect(await redis.llen(k.dead)).toBe(0);
  });

  it('two `dead replay --all` processes started together replay 3,000 delivery letters once between them', async () => {
    const env = testEnv();
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const k = keys(prefix);
    const ids = Array.from({ length: 3000 }, (_, i) => eventId(`run-concurrent-${i}`, 'run.completed'));
    const letters = ids.map((id, i) =>
      deliveryDeadLetter('no 2xx after 6 attempts', new Date(), {
        target: 'g:hook',
        format: 'default',
        attempts: 6,
        last_status: 500,
        last_response: 'down',
        event: { id, type: 'run.completed', timestamp: new Date().toISOString(), data: { run_id: `run-concurrent-${i}` } },
      }),
    );
    for (let i = 0; i < letters.length; i += 100) await redis.lpush(k.dead, ...letters.slice(i, i + 100));

    const outs = await Promise.all([runCli(['dead', 'replay', '--all'], env), runCli(['dead', 'replay', '--all'], env)]);
    const counts = outs.map((r) => {
      expect(r.code, r.out).toBe(0);
      const m = /replayed (\d+) dead letters(?: \((\d+) already taken by another process\))?/.exec(r.stdout);
      expect(m, r.out).not.toBeNull();
      return { replayed: Number(m?.[1]), taken: Number(m?.[2] ?? 0) };
    });
    console.log(`two replays at once: ${JSON.stringify(counts)}`);
    expect(counts[0]!.replayed + counts[1]!.replayed).toBe(ids.length);
    expect(await redis.llen(k.dead)).toBe(0);
    expect((await redis.zrange(k.webhooks, '0', '-1')).sort()).toEqual(ids.map((id) => `${id}\ng:hook`).sort());
    for (const id of ids) expect(await redis.hget(k.payloads, `${id}#n`)).toBe('1');
  });
});
