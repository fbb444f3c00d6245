import { Webhook } from 'standardwebhooks';
import { describe, expect, inject, it } from 'vitest';
import { loadConfig, type Config } from '../src/config.ts';
import type { Daemon, DaemonDeps } from '../src/daemon.ts';
import { intakeLimits } from '../src/config.ts';
import { listDeadLetters, replayDeadLetters } from '../src/dead-letters.ts';
import type { WatchEvent } from '../src/events/event.ts';
import type { SimRunSpec, Simulator } from '../tools/simulator/server.ts';
import {
  enqueue,
  keys,
  outboxDrained as drained,
  readEvents,
  runCli,
  startDaemon as startIn,
  storeFor,
  testConfig,
  testEnv,
  waitFor,
  waitForCount,
  waitForEvents,
  type EnvOverrides,
  type StreamEvent,
  useSuite,
} from './kit/harness.ts';
import { newSecret, type Receiver, type ReceivedRequest } from './kit/receiver.ts';
import { createRuns as create, OUTCOMES } from './kit/runs.ts';

/**
 * Webhook delivery end to end: the daemon in-process, the simulator as Letta, a real Redis and
 * a receiver on 127.0.0.1 that verifies every signature with the `standardwebhooks` package.
 * Faults (endpoint down, 410, 429, redirects, 5xx, slowness) are really injected at the
 * receiver, and every test counts exactly what arrived.
 */

const FAST_SCHEDULE = [0, 50, 100, 200, 400, 800];
const CONFIG_FILE = 'webhooks-test.json';
/** What delivery.ts keeps of the last failed response in a dead letter (RESPONSE_SNIPPET_BYTES). */
const RESPONSE_SNIPPET_BYTES = 512;
const outcomeOf = (i: number) => OUTCOMES[i % OUTCOMES.length] ?? 'completed';

const { redis, cleanup, simulator, receiver } = useSuite();

// ---------------------------------------------------------------------------------------------
// Set-up helpers

interface Setup {
  sim: Simulator;
  secrets: readonly string[];
  /** The `webhooks` section of the WATCHER_CONFIG file (scheduleMs defaults to FAST_SCHEDULE). */
  webhooks: Record<string, unknown>;
  env?: EnvOverrides;
  deps?: Partial<Omit<DaemonDeps, 'config' | 'log'>>;
}

/** Config as the daemon loads it: env (secrets) plus a WATCHER_CONFIG file (read in memory). */
function configFor(s: Setup): Config {
  const file = JSON.stringify({ webhooks: { scheduleMs: FAST_SCHEDULE, ...s.webhooks } });
  return loadConfig({
    env: testEnv({
      LETTA_BASE_URL: s.sim.url,
      WATCHER_WEBHOOK_SECRET: s.secrets.join(' '),
      WATCHER_CONFIG: CONFIG_FILE,
      WATCHER_SHUTDOWN_GRACE_MS: '500',
      ...s.env,
    }),
    readFile: (path) => {
      if (path !== CONFIG_FILE) throw new Error(`unexpected config file ${path}`);
      return file;
    },
  });
}

async function startDaemon(s: Setup): Promise<{ daemon: Daemon; config: Config; prefix: string }> {
  const config = configFor(s);
  const daemon = await startIn(cleanup, config, s.deps);
  return { daemon, config, prefix: config.redis.keyPrefix };
}

/** `n` runs, each as `spec(i)` says. */
function createRuns(sim: Simulator, n: number, spec: (i: number) => SimRunSpec) {
  return create(sim, n, { spec }).list;
}

const outboxDrained = (prefix: string, timeoutMs?: number) => drained(redis, prefix, timeoutMs);

interface DeliveryDead {
  kind: string;
  reason: string;
  at: string;
  entry: {
    target: string;
    format: string | null;
    attempts: number;
    last_status?: number | null;
    last_response?: string;
    event: WatchEvent;
  };
}

async function deadLetters(prefix: string): Promise<DeliveryDead[]> {
  return (await listDeadLetters(storeFor(redis, prefix))).map((d) => ({ kind: d.kind, reason: d.reason, at: d.at, entry: d.entry as DeliveryDead['entry'] }));
}

async function waitForDead(prefix: string, n: number, timeoutMs = 15_000): Promise<DeliveryDead[]> {
  return await waitForCount(() => deadLetters(prefix), n, 'dead letters', {
    timeoutMs,
    describe: async () => JSON.stringify((await deadLetters(prefix)).map((d) => d.reason)),
  });
}

async function waitForIds(rx: Receiver, path: string, n: number, how: 'received' | 'delivered' = 'delivered', timeoutMs = 15_000): Promise<void> {
  const count = () => (how === 'delivered' ? rx.deliveredIds(path) : rx.distinctIds(path)).size;
  await waitFor(() => count() >= n, {
    timeoutMs,
    describe: () => `${count()} of ${n} webhook-ids ${how} on ${path} (${rx.on(path).length} requests: ${rx.on(path).map((r) => r.status ?? 'pending').join(',')})`,
  });
}

function eventsById(events: readonly StreamEvent[]): Map<string, WatchEvent> {
  return new Map(events.map(({ event }) => [event.id, event]));
}

function expectSigned(r: ReceivedRequest): void {
  expect(r.verifyErrors, `signature of request #${r.seq} to ${r.path}`).toEqual(r.verifyErrors.map(() => undefined));
  expect(r.verified).toBe(true);
}

/** The CLI (`node src/main.ts ...`) against the test's Redis and prefix: what it printed (it must exit 0). */
async function cli(prefix: string, ...args: string[]): Promise<string> {
  const r = await runCli(args, { REDIS_URL: inject('redisUrl'), WATCHER_KEY_PREFIX: prefix }, 15_000);
  expect(r.code, `${args.join(' ')}: ${r.out}`).toBe(0);
  return r.stdout;
}

// ---------------------------------------------------------------------------------------------

describe('webhooks (in-process daemon, simulator, real Redis, verifying receiver)', () => {
  it('every event reaches a configured target once, signed, with webhook-id = event id and the envelope as body', async () => {
    const secret = newSecret();
    const sim = await simulator();
    const rx = await receiver({ secrets: [secret] });
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'main', headers: { 'x-team': 'ops' } }] },
    });
    const runs = createRuns(sim, 20, (i) => ({ durationMs: (i * 37) % 400, outcome: outcomeOf(i) }));
    await enqueue(redis, prefix, runs.map((r) => r.id));

    await waitForEvents(redis, prefix, 20);
    await waitForIds(rx, '/hook', 20);
    await outboxDrained(prefix);

    const events = await readEvents(redis, prefix);
    expect(events).toHaveLength(20);
    expect(new Set(events.map((e) => e.event.data.run_id))).toEqual(new Set(runs.map((r) => r.id)));
    const byId = eventsById(events);
    // No fault injected: exactly one request per event.
    expect(rx.requests).toHaveLength(20);
    expect(rx.distinctIds()).toEqual(new Set(byId.keys()));
    const now = Math.floor(Date.now() / 1000);
    for (const r of rx.requests) {
      expectSigned(r);
      expect(r.method).toBe('POST');
      expect(r.path).toBe('/hook');
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['x-team']).toBe('ops');
      expect(r.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
      expect(Math.abs(Number(r.headers['webhook-timestamp']) - now)).toBeLessThan(60);
      const event = byId.get(r.id ?? '');
      expect(event, `webhook-id ${r.id} is an event id in P:events`).toBeDefined();
      expect(JSON.parse(r.body)).toEqual(event);
    }
    expect(await redis.llen(keys(prefix).dead)).toBe(0);
  });

  it('two secrets give two signatures, and each secret alone verifies (rotation)', async () => {
    const [oldSecret, newSecretValue, stranger] = [newSecret(), newSecret(), newSecret()];
    const sim = await simulator();
    const rx = await receiver({ secrets: [oldSecret, newSecretValue] });
    const { prefix } = await startDaemon({
      sim,
      secrets: [oldSecret, newSecretValue],
      webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'main' }] },
    });
    const runs = createRuns(sim, 5, (i) => ({ durationMs: i * 50, outcome: 'completed' }));
    await enqueue(redis, prefix, runs.map((r) => r.id));
    await waitForIds(rx, '/hook', 5);
    await outboxDrained(prefix);

    expect(rx.requests).toHaveLength(5);
    for (const r of rx.requests) {
      expect(r.verifiedBy).toEqual([true, true]);
      const signatures = (r.headers['webhook-signature'] ?? '').split(' ');
      expect(signatures).toHaveLength(2);
      // Each signature is that of one secret: a receiver holding only it verifies.
      const only = (i: number) => ({ ...r.headers, 'webhook-signature': signatures[i] ?? '' });
      expect(() => new Webhook(oldSecret).verify(r.body, only(0))).not.toThrow();
      expect(() => new Webhook(newSecretValue).verify(r.body, only(1))).not.toThrow();
      expect(() => new Webhook(oldSecret).verify(r.body, only(1))).toThrow();
      // A secret the daemon does not hold verifies nothing (the check is real).
      expect(() => new Webhook(stranger).verify(r.body, r.headers)).toThrow();
      // A changed body no longer verifies.
      expect(() => new Webhook(oldSecret).verify(`${r.body} `, r.headers)).toThrow();
    }
  });

  it('an endpoint down for a stretch, then back: every event arrives, none dead-lettered', async () => {
    const secret = newSecret();
    const sim = await simulator();
    const rx = await receiver({ secrets: [secret] });
    await rx.down();
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      // Long enough to outlast the outage; the outage spans at least two attempts per delivery.
      webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'main' }], scheduleMs: [0, 100, 200, 400, 800, 1600, 3200, 6400] },
    });
    const runs = createRuns(sim, 15, (i) => ({ durationMs: (i * 41) % 600, outcome: outcomeOf(i) }));
    await enqueue(redis, prefix, runs.map((r) => r.id));

    const events = await waitForEvents(redis, prefix, 15);
    const k = keys(prefix);
    // Every delivery has really failed (connection refused) at least twice while the endpoint was down.
    await waitFor(
      async () => {
        const attempts = await Promise.all(events.map(({ event }) => redis.hget(k.attempts, `${event.id}\ng:main`)));
        return attempts.every((a) => Number((a ?? '0').split(':')[0]) >= 2);
      },
      { timeoutMs: 10_000 },
    );
    expect(rx.requests).toHaveLength(0);
    expect(rx.isUp).toBe(false);

    await rx.up();
    await waitForIds(rx, '/hook', 15);
    await outboxDrained(prefix);

    expect(rx.distinctIds()).toEqual(new Set(events.map((e) => e.event.id)));
    for (const r of rx.requests) expectSigned(r);
    // Each event delivered once after the outage (at-least-once, deduplicable by webhook-id).
    expect(rx.deliveredIds().size).toBe(15);
    expect(await deadLetters(prefix)).toEqual([]);
    expect(await readEvents(redis, prefix)).toHaveLength(15);
  });

  it('410 Gone stops delivery to that endpoint until a dead-letter replay re-enables it', async () => {
    const secret = newSecret();
    const sim = await simulator();
    let goneAnswers = 410;
    const rx = await receiver({
      secrets: [secret],
      respond: (r) => (r.path === '/gone' ? { status: goneAnswers, body: goneAnswers === 410 ? 'gone for good' : 'ok' } : { status: 200 }),
    });
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      webhooks: {
        targets: [
          { url: `${rx.url}/gone`, name: 'gone' },
          { url: `${rx.url}/fine`, name: 'fine' },
        ],
      },
    });
    const k = keys(prefix);
    const [first] = createRuns(sim, 1, () => ({ durationMs: 0, outcome: 'completed' }));
    await enqueue(redis, prefix, [first?.id ?? '']);

    const [dead410] = await waitForDead(prefix, 1);
    await waitForIds(rx, '/fine', 1);
    expect(rx.on('/gone')).toHaveLength(1);
    expect(rx.on('/gone')[0]?.status).toBe(410);
    expect(dead410?.kind).toBe('delivery');
    expect(dead410?.reason).toMatch(/410/);
    expect(dead410?.entry.target).toBe('g:gone');
    expect(dead410?.entry.last_status).toBe(410);
    // A short answer is kept whole.
    expect(dead410?.entry.last_response).toBe('gone for good');
    expect(dead410?.entry.event.data.run_id).toBe(first?.id);
    expect(await redis.sismember(k.disabled, 'g:gone')).toBe(1);

    // Later events: the other endpoint gets them, the gone one is never asked again.
    const later = createRuns(sim, 3, () => ({ durationMs: 0, outcome: 'failed' }));
    await enqueue(redis, prefix, later.map((r) => r.id));
    const dead = await waitForDead(prefix, 4);
    await waitForIds(rx, '/fine', 4);
    await outboxDrained(prefix);
    expect(dead).toHaveLength(4);
    expect(rx.on('/gone')).toHaveLength(1);
    expect(rx.on('/fine')).toHaveLength(4);
    for (const d of dead.slice(0, 3)) {
      expect(d.entry.target).toBe('g:gone');
      expect(d.reason).toMatch(/410/);
    }
    expect(new Set(dead.map((d) => d.entry.event.data.run_id))).toEqual(new Set([first?.id, ...later.map((r) => r.id)]));

    // The endpoint is back: replaying the dead letters re-enables it and delivers all four.
    goneAnswers = 200;
    const result = await replayDeadLetters(storeFor(redis, prefix), intakeLimits(testConfig()), await listDeadLetters(storeFor(redis, prefix)));
    expect(result).toEqual({ replayed: 4, skipped: [], gone: 0 });
    await waitForIds(rx, '/gone', 4);
    await outboxDrained(prefix);
    expect(rx.on('/gone')).toHaveLength(5);
    expect(rx.deliveredIds('/gone').size).toBe(4);
    expect(await redis.sismember(k.disabled, 'g:gone')).toBe(0);
    expect(await redis.llen(k.dead)).toBe(0);
    for (const r of rx.requests) expectSigned(r);
  });

  it('429 with Retry-After: 1 delays the next attempt by a second although the schedule says 50 ms', async () => {
    const secret = newSecret();
    const sim = await simulator();
    const seen = new Map<string, number>();
    const rx = await receiver({
      secrets: [secret],
      respond: (r) => {
        const key = `${r.path} ${r.id ?? ''}`;
        const n = (seen.get(key) ?? 0) + 1;
        seen.set(key, n);
        if (n > 1) return { status: 200 };
        // /limited: rate-limited with Retry-After; /plain: a bare 503 as the control.
        return r.path === '/limited' ? { status: 429, headers: { 'retry-after': '1' }, body: 'slow down' } : { status: 503 };
      },
    });
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      webhooks: {
        targets: [
          { url: `${rx.url}/limited`, name: 'limited' },
          { url: `${rx.url}/plain`, name: 'plain' },
        ],
      },
    });
    const [run] = createRuns(sim, 1, () => ({ durationMs: 0, outcome: 'completed' }));
    await enqueue(redis, prefix, [run?.id ?? '']);
    await waitForIds(rx, '/limited', 1);
    await waitForIds(rx, '/plain', 1);
    await outboxDrained(prefix);

    const limited = rx.on('/limited');
    expect(limited.map((r) => r.status)).toEqual([429, 200]);
    expect(limited[1]?.id).toBe(limited[0]?.id);
    const gap = (limited[1]?.at ?? 0) - (limited[0]?.answeredAt ?? 0);
    expect(gap).toBeGreaterThanOrEqual(950);
    // Without Retry-After the schedule's 50 ms (plus a claim interval) applies.
    const plain = rx.on('/plain');
    expect(plain.map((r) => r.status)).toEqual([503, 200]);
    expect((plain[1]?.at ?? 0) - (plain[0]?.answeredAt ?? 0)).toBeLessThan(900);
    for (const r of rx.requests) expectSigned(r);
    expect(await redis.llen(keys(prefix).dead)).toBe(0);
  });

  it('a 302 is a failure: the redirect is not followed, the delivery is retried and then dead-lettered', async () => {
    const secret = newSecret();
    const sim = await simulator();
    const rx = await receiver({
      secrets: [secret],
      respond: (r) => (r.path === '/hook' ? { status: 302, headers: { location: `http://127.0.0.1:${rx.port}/elsewhere` } } : { status: 200 }),
    });
    const { prefix } = await startDaemon({ sim, secrets: [secret], webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'main' }] } });
    const [run] = createRuns(sim, 1, () => ({ durationMs: 0, outcome: 'completed' }));
    await enqueue(redis, prefix, [run?.id ?? '']);

    const [dead] = await waitForDead(prefix, 1);
    await outboxDrained(prefix);
    expect(rx.on('/hook')).toHaveLength(FAST_SCHEDULE.length);
    expect(rx.on('/hook').every((r) => r.status === 302)).toBe(true);
    expect(rx.on('/elsewhere')).toHaveLength(0);
    expect(rx.requests).toHaveLength(FAST_SCHEDULE.length);
    expect(dead?.entry.last_status).toBe(302);
    expect(dead?.entry.attempts).toBe(FAST_SCHEDULE.length);
    expect(dead?.entry.target).toBe('g:main');
    expect(await deadLetters(prefix)).toHaveLength(1);
  });

  it('after the last attempt the delivery is in P:dead with the last status and a cut response; dead list shows it, dead replay --all delivers it', async () => {
    const secret = newSecret();
    const sim = await simulator();
    // Each attempt's answer differs from its first byte, so the letter shows which it kept.
    const errorBody = (attempt: number) => `attempt ${attempt}: upstream exploded: ${'x'.repeat(4000)}`;
    let healthy = false;
    let attempts = 0;
    const rx = await receiver({ secrets: [secret], respond: () => (healthy ? { status: 204 } : { status: 500, body: errorBody(++attempts) }) });
    const { prefix } = await startDaemon({ sim, secrets: [secret], webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'main' }] } });
    const [run] = createRuns(sim, 1, () => ({ durationMs: 0, outcome: 'failed' }));
    await enqueue(redis, prefix, [run?.id ?? '']);

    const [dead] = await waitForDead(prefix, 1);
    await outboxDrained(prefix);
    const [event] = await readEvents(redis, prefix);
    expect(rx.requests).toHaveLength(FAST_SCHEDULE.length);
    expect(rx.requests.every((r) => r.status === 500 && r.id === event?.event.id)).toBe(true);
    expect(dead?.kind).toBe('delivery');
    expect(dead?.reason).toContain(`${FAST_SCHEDULE.length} attempts`);
    expect(dead?.entry.attempts).toBe(FAST_SCHEDULE.length);
    expect(dead?.entry.last_status).toBe(500);
    // Exactly the first 512 bytes of the last answer (ASCII: 512 characters).
    expect(attempts).toBe(FAST_SCHEDULE.length);
    expect(dead?.entry.last_response).toBe(errorBody(FAST_SCHEDULE.length).slice(0, RESPONSE_SNIPPET_BYTES));
    expect(Buffer.byteLength(dead?.entry.last_response ?? '')).toBe(RESPONSE_SNIPPET_BYTES);
    expect(dead?.entry.event).toEqual(event?.event);

    const listed = JSON.parse(await cli(prefix, 'dead', 'list', '--json')) as { index: number; kind: string; reason: string }[];
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ index: 0, kind: 'delivery', reason: dead?.reason });
    const text = await cli(prefix, 'dead', 'list');
    expect(text).toContain('delivery');
    expect(text).toContain(dead?.reason ?? '?');

    healthy = true;
    expect(await cli(prefix, 'dead', 'replay', '--all')).toMatch(/replayed 1 dead letter/);
    await waitForIds(rx, '/hook', 1);
    await outboxDrained(prefix);
    expect(rx.requests).toHaveLength(FAST_SCHEDULE.length + 1);
    expect(rx.requests.at(-1)?.status).toBe(204);
    expect(rx.requests.at(-1)?.id).toBe(event?.event.id);
    expectSigned(rx.requests.at(-1) as ReceivedRequest);
    expect(JSON.parse(rx.requests.at(-1)?.body ?? 'null')).toEqual(event?.event);
    expect(await redis.llen(keys(prefix).dead)).toBe(0);
  });

  it('Letta format: a configured letta target and a per-run callback_url both get exactly {run_id, status, completed_at, metadata}', async () => {
    const secret = newSecret();
    const sim = await simulator();
    const rx = await receiver({ secrets: [secret] });
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      webhooks: {
        targets: [{ url: `${rx.url}/letta`, name: 'letta', format: 'letta' }],
        allowedHosts: ['127.0.0.1'],
        allowPrivateAddresses: true,
      },
    });
    const [withCallback, withWebhook] = createRuns(sim, 2, (i) => ({ durationMs: 50 * i, outcome: i === 0 ? 'completed' : 'cancelled' }));
    const metadata = { customer: 'acme', attempt: 2, tags: ['a', 'b'] };
    await enqueue(redis, prefix, [
      JSON.stringify({ run_id: withCallback?.id, callback_url: `${rx.url}/callback?source=letta`, metadata }),
      JSON.stringify({ run_id: withWebhook?.id, webhook_url: `${rx.url}/per-run` }),
    ]);
    await waitForIds(rx, '/letta', 2);
    await waitForIds(rx, '/callback', 1);
    await waitForIds(rx, '/per-run', 1);
    await outboxDrained(prefix);

    const byRun = new Map((await readEvents(redis, prefix)).map(({ event }) => [event.data.run_id, event]));
    expect(byRun.size).toBe(2);
    const cbEvent = byRun.get(withCallback?.id ?? '');
    const whEvent = byRun.get(withWebhook?.id ?? '');
    expect(rx.requests).toHaveLength(4);
    expect(rx.on('/letta')).toHaveLength(2);
    expect(rx.on('/callback')).toHaveLength(1);
    expect(rx.on('/per-run')).toHaveLength(1);
    for (const r of rx.requests) expectSigned(r);

    const lettaBody = (e: WatchEvent | undefined) => ({
      run_id: e?.data.run_id,
      status: e?.data.status,
      completed_at: e?.data.run?.completed_at ?? null,
      metadata: e?.data.metadata ?? null,
    });
    const callback = rx.on('/callback')[0];
    expect(callback?.path).toBe('/callback?source=letta');
    expect(callback?.id).toBe(cbEvent?.id);
    expect(Object.keys(JSON.parse(callback?.body ?? '{}') as object).sort()).toEqual(['completed_at', 'metadata', 'run_id', 'status']);
    expect(JSON.parse(callback?.body ?? '{}')).toEqual({ ...lettaBody(cbEvent), metadata, status: 'completed' });
    expect((JSON.parse(callback?.body ?? '{}') as { completed_at: unknown }).completed_at).toEqual(expect.any(String));
    for (const r of rx.on('/letta')) {
      const event = r.id === cbEvent?.id ? cbEvent : whEvent;
      expect(r.id === cbEvent?.id || r.id === whEvent?.id).toBe(true);
      expect(Object.keys(JSON.parse(r.body) as object).sort()).toEqual(['completed_at', 'metadata', 'run_id', 'status']);
      expect(JSON.parse(r.body)).toEqual(lettaBody(event));
    }
    // A per-run webhook_url gets the event envelope.
    const perRun = rx.on('/per-run')[0];
    expect(perRun?.id).toBe(whEvent?.id);
    expect(JSON.parse(perRun?.body ?? '{}')).toEqual(whEvent);
  });

  it('body size cap: over webhooks.maxBodyBytes the body is cut under the cap, still signed, and data.truncated says what went', async () => {
    const secret = newSecret();
    const sim = await simulator();
    const rx = await receiver({ secrets: [secret] });
    const maxBodyBytes = 1024;
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'main' }], maxBodyBytes },
    });
    const big = { blob: 'b'.repeat(5000), list: Array.from({ length: 50 }, (_, i) => `item-${i}`) };
    // Large metadata on the Run itself (run.metadata), on the intake entry (data.metadata), and a small run.
    const runMeta = sim.createRun({ durationMs: 0, outcome: 'completed', metadata: big });
    const intakeMeta = sim.createRun({ durationMs: 0, outcome: 'completed' });
    const small = sim.createRun({ durationMs: 0, outcome: 'completed' });
    await enqueue(redis, prefix, [
      JSON.stringify({ run_id: runMeta.id, metadata: { k: 'v' } }),
      JSON.stringify({ run_id: intakeMeta.id, metadata: big }),
      small.id,
    ]);
    await waitForIds(rx, '/hook', 3);
    await outboxDrained(prefix);
    expect(rx.requests).toHaveLength(3);

    const byRun = new Map((await readEvents(redis, prefix)).map(({ event }) => [event.data.run_id, event]));
    const bodyOf = (runId: string) => {
      const event = byRun.get(runId);
      const r = rx.requests.find((x) => x.id === event?.id);
      expect(r, `request for ${runId}`).toBeDefined();
      expectSigned(r as ReceivedRequest);
      expect(Buffer.byteLength(r?.body ?? '')).toBeLessThanOrEqual(maxBodyBytes);
      return { event, body: JSON.parse(r?.body ?? '{}') as WatchEvent & { data: { truncated?: string[] } } };
    };

    // The stream keeps the whole event; only the webhook body is cut.
    expect(byRun.get(runMeta.id)?.data.run?.metadata).toEqual(big);
    expect(byRun.get(intakeMeta.id)?.data.metadata).toEqual(big);

    const a = bodyOf(runMeta.id);
    expect(a.body.id).toBe(a.event?.id);
    expect(a.body.data.truncated).toContain('run.metadata');
    expect(a.body.data.run_id).toBe(runMeta.id);
    expect(a.body.data.status).toBe('completed');
    expect(a.body.data.run?.id).toBe(runMeta.id);

    const b = bodyOf(intakeMeta.id);
    expect(b.body.id).toBe(b.event?.id);
    expect(b.body.data.truncated).toContain('metadata');
    expect(b.body.data.metadata).toBeNull();
    expect(b.body.data.run_id).toBe(intakeMeta.id);

    const c = bodyOf(small.id);
    expect(c.body.data.truncated).toBeUndefined();
    expect(c.body).toEqual(c.event);
  });

  it('a slow endpoint (2 s per answer) holds back neither another host nor the events in P:events', async () => {
    const secret = newSecret();
    const sim = await simulator();
    // Two hosts (origins): the slot cap is per host, so a slow path would hold back the other
    // paths of its own host, but never another host.
    const slow = await receiver({ secrets: [secret], respond: () => ({ status: 200, delayMs: 2000 }) });
    const fast = await receiver({ secrets: [secret] });
    const { prefix } = await startDaemon({
      sim,
      secrets: [secret],
      webhooks: {
        targets: [
          { url: `${slow.url}/slow`, name: 'slow' },
          { url: `${fast.url}/fast`, name: 'fast' },
        ],
      },
    });
    const n = 8;
    const runs = createRuns(sim, n, (i) => ({ durationMs: i * 20, outcome: outcomeOf(i) }));
    await enqueue(redis, prefix, runs.map((r) => r.id));

    await waitForIds(fast, '/fast', n, 'delivered', 10_000);
    // At this instant the slow endpoint is busy but has answered nothing yet.
    const slowNow = slow.on('/slow');
    const eventsNow = await readEvents(redis, prefix);
    expect(slowNow.length).toBeGreaterThan(0);
    expect(slowNow.filter((r) => r.status !== undefined)).toHaveLength(0);
    expect(eventsNow).toHaveLength(n);
    expect(fast.deliveredIds('/fast')).toEqual(new Set(eventsNow.map((e) => e.event.id)));

    // The slow one gets everything too, in the end.
    await waitForIds(slow, '/slow', n, 'delivered', 20_000);
    await outboxDrained(prefix);
    expect(fast.on('/fast')).toHaveLength(n);
    expect(slow.deliveredIds('/slow').size).toBe(n);
    for (const r of [...slow.requests, ...fast.requests]) expectSigned(r);
    expect(await redis.llen(keys(prefix).dead)).toBe(0);
  });
});
