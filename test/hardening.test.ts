import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { eventId } from '../src/events/event.ts';
import {
  captureLogger,
  configFile,
  enqueue,
  expectExactlyOnce,
  keys,
  outboxDrained,
  readDead,
  readEvents,
  runCli,
  shortLease,
  spawnDaemon,
  startApiIn,
  startDaemon,
  testConfig,
  testEnv,
  useSuite,
  waitFor,
  waitForDead,
  waitForEvents,
} from './kit/harness.ts';
import { startRedisServer, type RedisServer } from './kit/redis-server.ts';

/**
 * Regression tests for the attack review and the misconfigured-server run (issue "Hardening"):
 * one test per finding, each reproducing what broke. Every fault is real: hostile entries pushed
 * as a producer would, keys of the wrong type set in Redis, servers that are not Letta.
 */

const { redis, cleanup, simulator, receiver } = useSuite();
const newRunId = () => `run-${randomUUID()}`;

/** A Redis of the test's own whose SLOWLOG records every command (to time each script call). */
async function slowloggedRedis(): Promise<{ server: RedisServer; own: Redis }> {
  const server = await startRedisServer({ appendOnly: false });
  cleanup.add(() => server.destroy());
  const own = new Redis(server.url);
  cleanup.add(() => own.quit());
  await own.config('SET', 'slowlog-log-slower-than', '0');
  await own.config('SET', 'slowlog-max-len', '100000');
  return { server, own };
}

/** The longest script call Redis recorded (µs), from SLOWLOG with every command logged. */
async function longestScriptUs(client: Redis): Promise<number> {
  const log = (await client.slowlog('GET', 100_000)) as [number, number, number, string[]][];
  return Math.max(0, ...log.filter((e) => /^eval/i.test(String(e[3]?.[0]))).map((e) => Number(e[2])));
}

describe('1. intake is linear in each entry and bounded per batch', () => {
  it('four 64 KiB entries of interior white space cost Redis milliseconds, not seconds', async () => {
    const { server, own } = await slowloggedRedis();
    const sim = await simulator();
    const run = sim.createRun({ durationMs: 0, outcome: 'completed' });
    const entry = `{"run_id":"${run.id}"${' '.repeat(65_450)}}`;
    expect(Buffer.byteLength(entry)).toBeLessThanOrEqual(65_536);
    const config = testConfig({ REDIS_URL: server.url, LETTA_BASE_URL: sim.url });
    await own.lpush(keys(config.redis.keyPrefix).intake, entry, entry, entry, entry);
    // Another client of the same Redis, as every other application sharing it.
    let worstPingMs = 0;
    let pinging = true;
    const pinger = (async () => {
      while (pinging) {
        const t = performance.now();
        await own.ping();
        worstPingMs = Math.max(worstPingMs, performance.now() - t);
        await sleep(2);
      }
    })();
    await startDaemon(cleanup, config);
    const events = await waitForEvents(own, config.redis.keyPrefix, 1, { timeoutMs: 60_000 });
    pinging = false;
    await pinger;
    const longest = await longestScriptUs(own);
    console.log(`longest script ${longest} µs, worst PING from another client ${worstPingMs.toFixed(1)} ms`);
    expect(events.map((e) => e.event.data.run_id)).toEqual([run.id]);
    expect(longest).toBeLessThan(50_000);
  });

  it('one intake call takes a bounded number of bytes: 120 entries of 60 KB go in several calls, none over 50 ms', async () => {
    const { server, own } = await slowloggedRedis();
    const sim = await simulator();
    const config = testConfig({ REDIS_URL: server.url, LETTA_BASE_URL: sim.url });
    const ids: string[] = [];
    const entries: string[] = [];
    for (let i = 0; i < 120; i++) {
      const id = sim.createRun({ durationMs: 0, outcome: 'completed' }).id;
      ids.push(id);
      entries.push(JSON.stringify({ run_id: id, metadata: { pad: 'x'.repeat(60_000) } }));
    }
    await enqueue(own, config.redis.keyPrefix, entries);
    await startDaemon(cleanup, config);
    const events = await waitForEvents(own, config.redis.keyPrefix, 120, { timeoutMs: 60_000 });
    expectExactlyOnce(events, ids);
    const intakeCalls = ((await own.slowlog('GET', 100_000)) as [number, number, number, string[]][]).filter(
      (e) => /^eval/i.test(String(e[3]?.[0])) && e[3]?.includes(keys(config.redis.keyPrefix).intake),
    );
    // 120 x 60 KB is 7.2 MB; a call stops after the entry that crosses intake.batchBytes
    // (1 MiB), so it takes at most ~1.1 MB and at least 7 calls carry the entries (an intake
    // without the byte budget takes all 120 in one).
    const perCall = config.intake.batchBytes + 60_100;
    expect(intakeCalls.length).toBeGreaterThanOrEqual(Math.ceil((120 * 60_000) / perCall));
    expect(await longestScriptUs(own)).toBeLessThan(50_000);
  });
});

describe('2 and 10. one rule for per-run URLs, at intake, in enqueue and at delivery', () => {
  const refused = ['http://x:99999/', 'http://[::1', 'http://:80/', 'http://%zz/', 'http://256.1.1.1/', 'http://a b/', 'http://ex\u00e4mple.com/', 'http://user:pw@example.com/'];

  it('URLs that new URL() refuses (or that carry credentials) are dead-lettered at intake, naming the field', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const entries = refused.map((url) => JSON.stringify({ run_id: newRunId(), webhook_url: url }));
    await enqueue(redis, prefix, entries);
    await startDaemon(cleanup, config);
    const dead = await waitForDead(redis, prefix, refused.length);
    expect(dead).toHaveLength(refused.length);
    for (const d of dead) {
      expect(d.kind).toBe('intake');
      expect(d.reason).toMatch(/^webhook_url /);
    }
    expect(await redis.zcard(keys(prefix).due)).toBe(0);
  });

  it('enqueue refuses what the intake would dead-letter, with the same reason, and pushes nothing', async () => {
    const env = testEnv();
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const deep = JSON.stringify(Array.from({ length: 40 }).reduce<unknown>((inner) => ({ a: inner }), 1));
    const cases: [string[], RegExp][] = [
      ...refused.map((url): [string[], RegExp] => [['enqueue', newRunId(), '--webhook', url], /webhook_url /]),
      [['enqueue', newRunId(), '--max-watch-ms', String(30 * 24 * 3600 * 1000 + 1)], /max_watch_ms is not a whole number of milliseconds from 1 to 2592000000/],
      [['enqueue', newRunId(), '--metadata', JSON.stringify({ pad: 'x'.repeat(70_000) })], /bytes, more than the limit of 65536/],
      [['enqueue', newRunId(), '--metadata', deep], /nested deeper than/],
      [['enqueue', 'run/../admin'], /not a valid run ID/],
    ];
    for (const [args, reason] of cases) {
      const r = await runCli(args, env);
      expect(r.code, args.join(' ')).toBe(78);
      expect(r.stderr, args.join(' ')).toMatch(reason);
    }
    expect(await redis.llen(keys(prefix).intake)).toBe(0);
    // And a good one goes through.
    const ok = await runCli(['enqueue', newRunId(), '--webhook', 'https://hooks.example.com/x?order=1', '--metadata', '{"a":1}'], env);
    expect(ok.code, ok.out).toBe(0);
    expect(await redis.llen(keys(prefix).intake)).toBe(1);
  });

  it('time arguments are ISO 8601 with a zone (or a date), or a clear error: --since 1 is not the year 2001', async () => {
    const env = testEnv();
    for (const bad of ['1', '2026', '2026-11-28T10:00:00', 'yesterday', '11/28/2026']) {
      const r = await runCli(['dead', 'replay', '--since', bad], env);
      expect(r.code, bad).toBe(78);
      expect(r.stderr).toContain('ISO 8601');
    }
    for (const good of ['2026-11-28', '2026-11-28T10:00:00Z', '2026-11-28T10:00:00.5+01:00']) {
      const r = await runCli(['dead', 'purge', '--before', good], env);
      expect(r.code, `${good}: ${r.out}`).toBe(0);
    }
  });
});

describe('2. a stored per-run URL that does not parse (written before the rule) is dead-lettered once', () => {
  it('is refused with its reason, once, and the backlog drains', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_CONFIG: configFile({ webhooks: { allowedHosts: ['*'], allowPrivateAddresses: true } }) });
    const k = keys(config.redis.keyPrefix);
    const event = { id: eventId(newRunId(), 'run.completed'), type: 'run.completed', data: {} };
    for (const url of ['http://[::1', 'http://x:99999/', 'http://%zz/']) {
      const member = `${event.id}\nu:${url}`;
      await redis.zadd(k.webhooks, '0', member);
      await redis.hset(k.attempts, member, '0:0');
    }
    await redis.hset(k.payloads, event.id, JSON.stringify(event), `${event.id}#n`, 3);
    await startDaemon(cleanup, config);
    await outboxDrained(redis, config.redis.keyPrefix);
    await sleep(500);
    const dead = await readDead(redis, config.redis.keyPrefix);
    expect(dead.map((d) => d.reason)).toEqual(['refused: not a valid URL', 'refused: not a valid URL', 'refused: not a valid URL']);
    expect(await redis.exists(k.payloads)).toBe(0);
  });
});

describe('3. a slow host holds at most its share of the delivery slots, however many URLs it has', () => {
  it('64 per-run URLs on one slow host differing by ?order=N: that host never holds more than a quarter of the slots', async () => {
    const sim = await simulator();
    let inFlight = 0;
    let maxInFlight = 0;
    const slow = await receiver({
      secrets: [],
      respond: async () => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        await sleep(400);
        inFlight--;
        return { status: 200 };
      },
    });
    const fast = await receiver({ secrets: [] });
    const file = configFile({
      webhooks: { allowedHosts: ['127.0.0.1'], allowPrivateAddresses: true, attemptTimeoutMs: 5000, concurrency: 16, scheduleMs: [0, 200, 400] },
    });
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_CONFIG: file, WATCHER_WEBHOOK_URLS: `${fast.url}/hook` });
    const runs = Array.from({ length: 64 }, (_, i) => ({ id: sim.createRun({ durationMs: 0, outcome: 'completed' }).id, i }));
    await enqueue(redis, config.redis.keyPrefix, runs.map(({ id, i }) => JSON.stringify({ run_id: id, webhook_url: `${slow.url}/hook?order=${i}` })));
    await startDaemon(cleanup, config);
    await waitFor(() => fast.deliveredIds().size === 64 && slow.deliveredIds().size === 64, { timeoutMs: 60_000 });
    const fastDone = Math.max(...fast.requests.map((r) => r.answeredAt ?? Infinity));
    const slowDone = Math.max(...slow.requests.map((r) => r.answeredAt ?? Infinity));
    console.log(`slow host: at most ${maxInFlight} in flight; fast target done ${slowDone - fastDone} ms before the slow host`);
    expect(maxInFlight).toBeLessThanOrEqual(4);
    expect(fastDone).toBeLessThan(slowDone);
  });
});

describe('4. a key of the wrong type changes nothing, and readiness names it', () => {
  it('P:due set as a string: intake entries stay in the list until the key is fixed, then each run gets one event', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    await redis.set(k.due, 'oops');
    const ids = Array.from({ length: 10 }, () => sim.createRun({ durationMs: 0, outcome: 'failed' }).id);
    await enqueue(redis, prefix, ids);
    const { log, lines } = captureLogger('error');
    const daemon = await startDaemon(cleanup, config, { log });
    const reasons = await waitFor(async () => {
      const r = await daemon.notReady();
      return r.some((x) => x.includes(k.due)) ? r : undefined;
    });
    expect(reasons.join('; ')).toMatch(/holds a string, expected a zset/);
    await sleep(500);
    expect(await redis.llen(k.intake)).toBe(10);
    expect(await daemon.registry.getSingleMetricAsString('letta_watcher_redis_errors_total')).toMatch(/cause="wrong_type"} [1-9]/);
    expect(lines.filter((l) => String(l['msg']).includes(k.due))).toHaveLength(1);
    await redis.del(k.due);
    expectExactlyOnce(await waitForEvents(redis, prefix, 10), ids);
    await waitFor(async () => (await daemon.notReady()).length === 0);
  });

  it('P:webhooks (the outbox) set as a string: no event is committed (not once per lease) until it is fixed, then exactly one each', async () => {
    const sim = await simulator();
    const rx = await receiver({ secrets: [] });
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_CONFIG: configFile(shortLease(1000)), WATCHER_WEBHOOK_URLS: `${rx.url}/hook` });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    await redis.set(k.webhooks, 'oops');
    const ids = Array.from({ length: 10 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await enqueue(redis, prefix, ids);
    const daemon = await startDaemon(cleanup, config);
    await waitFor(async () => (await daemon.notReady()).some((x) => x.includes(k.webhooks)));
    await sleep(3500); // three leases
    expect(await readEvents(redis, prefix)).toHaveLength(0);
    await redis.del(k.webhooks);
    const events = await waitForEvents(redis, prefix, 10);
    await sleep(1500);
    expectExactlyOnce(await readEvents(redis, prefix), ids);
    await waitFor(() => rx.deliveredIds().size === 10);
    expect(events).toHaveLength(10);
  });
});

/** `{a: {a: ... 1}}`, `depth` objects deep. */
function nested(depth: number): unknown {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
}

describe('5. nesting depth is bounded at intake, and replay checks before it removes', () => {
  it('metadata nested 1,000 deep is dead-lettered at intake with the reason', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const prefix = config.redis.keyPrefix;
    const good = sim.createRun({ durationMs: 0, outcome: 'completed' }).id;
    await enqueue(redis, prefix, [JSON.stringify({ run_id: newRunId(), metadata: nested(1000) }), JSON.stringify({ run_id: good, metadata: nested(20) })]);
    await startDaemon(cleanup, config);
    const dead = await waitForDead(redis, prefix, 1);
    expect(dead).toHaveLength(1);
    expect(dead[0]?.reason).toMatch(/nested deeper than \d+ levels/);
    expect((await waitForEvents(redis, prefix, 1)).map((e) => e.event.data.run_id)).toEqual([good]);
  });

  it('a delivery dead letter whose event is nested 1,000 deep is replayed into the outbox, never lost', async () => {
    const env = testEnv();
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const runId = newRunId();
    const event = { id: eventId(runId, 'run.completed'), type: 'run.completed', timestamp: new Date().toISOString(), data: { run_id: runId, run: { agent_id: 'a', metadata: nested(1000) } } };
    const letter = JSON.stringify({ kind: 'delivery', reason: 'no 2xx after 8 attempts', at: new Date().toISOString(), entry: { target: 'g:ops', attempts: 8, event } });
    await redis.lpush(keys(prefix).dead, letter);
    const r = await runCli(['dead', 'replay', '--all'], env);
    expect(r.code, r.out).toBe(0);
    expect(r.stdout).toContain('replayed 1 dead letters');
    expect(await redis.llen(keys(prefix).dead)).toBe(0);
    expect(await redis.zrange(keys(prefix).webhooks, '0', '-1')).toEqual([`${event.id}\ng:ops`]);
  });
});

describe('6 and 7. passwords stay masked however they are spelt', () => {
  it('a Redis password holding / ? # is not printed by a configuration error', async () => {
    // Port 1 refuses connections: a URL that parses fails to connect instead (exit 1).
    for (const [password, code] of [['Ab/Cd', 78], ['Ab?Cd', 78], ['Ab#Cd', 78], ['Ab/C?d#e@f', 78], ['Ab@Cd', 1], ['Ab%2FCd', 1]] as const) {
      const r = await runCli(['status'], { REDIS_URL: `redis://:${password}@127.0.0.1:1` });
      expect(r.code, r.out).toBe(code);
      expect(r.out).not.toContain(password);
      expect(r.out).not.toContain(password.slice(3));
      if (code === 78) expect(r.out).toContain('REDIS_URL');
    }
  });

  it('the start-up log names LETTA_BASE_URL without its userinfo', async () => {
    const sim = await simulator();
    const base = sim.url.replace('http://', 'http://letta-user:pw-s3cret-9f@');
    const d = spawnDaemon(testEnv({ LETTA_BASE_URL: base, WATCHER_LOG_LEVEL: 'info' }));
    await d.ready();
    expect(d.output()).toContain(sim.url.replace('http://', ''));
    expect(d.output()).not.toContain('pw-s3cret-9f');
    expect(d.output()).not.toContain('letta-user');
  });
});

describe('8. Retry-After never pushes a poll past the run\'s deadline', () => {
  it('429 with Retry-After: 3600 on a run watched for 1.5 s gives run.expired within seconds', async () => {
    const sim = await simulator({ faults: { rateLimitRate: 1, retryAfterSeconds: 3600 } });
    const config = testConfig({ LETTA_BASE_URL: sim.url });
    const id = sim.createRun({ outcome: 'never' }).id;
    await enqueue(redis, config.redis.keyPrefix, [JSON.stringify({ run_id: id, max_watch_ms: 1500 })]);
    const started = Date.now();
    await startDaemon(cleanup, config);
    const events = await waitForEvents(redis, config.redis.keyPrefix, 1, { timeoutMs: 15_000 });
    expect(events[0]?.event.type).toBe('run.expired');
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('9. dead letters with bytes that are not UTF-8', () => {
  it('can be listed, purged and replayed; the stored letter is valid UTF-8 JSON', async () => {
    const sim = await simulator();
    const env = testEnv({ LETTA_BASE_URL: sim.url });
    const config = testConfig(env);
    const prefix = config.redis.keyPrefix;
    await redis.lpush(keys(prefix).intake, Buffer.from('bad\xff', 'latin1'));
    const daemon = await startDaemon(cleanup, config);
    await waitFor(async () => (await redis.llen(keys(prefix).dead)) === 1);
    const stored = (await redis.lrangeBuffer(keys(prefix).dead, 0, 0))[0] ?? Buffer.alloc(0);
    expect(new TextDecoder('utf-8', { fatal: true }).decode(stored)).toContain('"kind":"intake"');
    await daemon.stop();
    // An older version stored the raw bytes as they came: the CLI must still act on them.
    await redis.lpush(keys(prefix).dead, Buffer.concat([Buffer.from('{"kind":"intake","reason":"x","at":"2026-11-28T00:00:00Z","entry":"bad'), Buffer.from([0xff]), Buffer.from('"}')]));
    const replay = await runCli(['dead', 'replay', '--index', '0'], env);
    expect(replay.stdout, replay.out).toContain('replayed 1 dead letters');
    expect(replay.out).not.toContain('already taken');
    // Replayed through the intake rules, it is refused again: a new, clean letter.
    expect(await redis.llen(keys(prefix).dead)).toBe(2);
    const purge = await runCli(['dead', 'purge', '--all'], env);
    expect(purge.stdout, purge.out).toContain('purged 2 dead letters');
    expect(await redis.llen(keys(prefix).dead)).toBe(0);
  });
});

/** A server that answers every request (health checks too) as `answer` says, switchable at run time. */
async function switchableServer(answer: { fn: (req: IncomingMessage, res: ServerResponse) => void }): Promise<string> {
  return (await startApiIn(cleanup, (req, res) => answer.fn(req, res), { health: false })).url;
}

describe('11. a base URL that is not a Letta API pauses polling instead of ending runs', () => {
  for (const [what, reply] of [
    ['a bare, empty 404 (the Letta App Server, a proxy)', (_req: IncomingMessage, res: ServerResponse) => res.writeHead(404).end()],
    ['FastAPI\'s route-miss {"detail":"Not Found"}', (_req: IncomingMessage, res: ServerResponse) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"detail":"Not Found"}')],
  ] as const) {
    it(`${what}: no run.not_found, readiness false naming the URL, one log line; the run finishes once the URL is right`, async () => {
      const sim = await simulator();
      const answer = { fn: reply as (req: IncomingMessage, res: ServerResponse) => void };
      const base = await switchableServer(answer);
      const config = testConfig({ LETTA_BASE_URL: base, WATCHER_CONFIG: configFile({ letta: { authPauseMs: 300 } }) });
      const run = sim.createRun({ durationMs: 0, outcome: 'failed' });
      await enqueue(redis, config.redis.keyPrefix, [run.id]);
      const { log, lines } = captureLogger('warn');
      const daemon = await startDaemon(cleanup, config, { log });
      const reasons = await waitFor(async () => {
        const r = await daemon.notReady();
        return r.some((x) => x.includes('Letta API')) ? r : undefined;
      });
      expect(reasons.join('; ')).toContain(base);
      await sleep(1500);
      expect(await readEvents(redis, config.redis.keyPrefix)).toHaveLength(0);
      expect(await redis.zcard(keys(config.redis.keyPrefix).due)).toBe(1);
      expect(lines.filter((l) => l['level'] === 50 && String(l['msg']).includes('LETTA_BASE_URL'))).toHaveLength(1);
      // The operator fixes the route (here: the same URL now reaches the simulator).
      answer.fn = (req, res) => {
        void fetch(`${sim.url}${req.url ?? '/'}`).then(async (r) => res.writeHead(r.status, { 'content-type': 'application/json' }).end(await r.text()));
      };
      const events = await waitForEvents(redis, config.redis.keyPrefix, 1, { timeoutMs: 15_000 });
      expect(events.map((e) => e.event.type)).toEqual(['run.failed']);
      await waitFor(async () => (await daemon.notReady()).length === 0);
    });
  }
});

describe('12. stream trimming never drops what a consumer group has not read', () => {
  it('with a group that has read nothing, 250 events stay although streamMaxLen is 10; once read and acked, they go', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_CONFIG: configFile({ events: { streamMaxLen: 10 } }) });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    await redis.xgroup('CREATE', k.events, 'alerts', '0', 'MKSTREAM');
    const ids = Array.from({ length: 250 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await enqueue(redis, prefix, ids);
    await startDaemon(cleanup, config);
    await waitForEvents(redis, prefix, 250, { timeoutMs: 30_000 });
    await sleep(1500);
    expect(await redis.xlen(k.events)).toBe(250);
    // The pipeline reads and acknowledges 200; the rest stay until it does.
    const read = (await redis.xreadgroup('GROUP', 'alerts', 'c1', 'COUNT', 200, 'STREAMS', k.events, '>')) as [string, [string, string[]][]][];
    const entryIds = read[0]?.[1].map(([id]) => id) ?? [];
    expect(entryIds).toHaveLength(200);
    await redis.xack(k.events, 'alerts', ...entryIds);
    await enqueue(redis, prefix, [sim.createRun({ durationMs: 0, outcome: 'completed' }).id]);
    await waitFor(async () => (await redis.xlen(k.events)) <= 51, { timeoutMs: 10_000, describe: async () => `${await redis.xlen(k.events)} entries` });
    expect(await redis.xlen(k.events)).toBe(51);
  });

  it('past the hard cap, unread entries are dropped, counted and logged loudly', async () => {
    const sim = await simulator();
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_CONFIG: configFile({ events: { streamMaxLen: 10, streamHardMaxLen: 100 } }) });
    const prefix = config.redis.keyPrefix;
    const k = keys(prefix);
    await redis.xgroup('CREATE', k.events, 'alerts', '0', 'MKSTREAM');
    const ids = Array.from({ length: 250 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await enqueue(redis, prefix, ids);
    const { log, lines } = captureLogger('error');
    const daemon = await startDaemon(cleanup, config, { log });
    await waitFor(async () => (await redis.zcard(k.due)) === 0 && (await redis.llen(k.intake)) === 0, { timeoutMs: 30_000 });
    await waitFor(async () => (await redis.xlen(k.events)) <= 100, { timeoutMs: 10_000 });
    const dropped = async () => Number(/ (\d+)$/m.exec(await daemon.registry.getSingleMetricAsString('letta_watcher_events_dropped_unread_total'))?.[1]);
    await waitFor(async () => (await dropped()) >= 150);
    expect(await dropped()).toBe(250 - (await redis.xlen(k.events)));
    expect(lines.some((l) => String(l['msg']).includes('had not read or acknowledged'))).toBe(true);
  });
});

describe('13. the memory flags hold however the daemon is started', () => {
  it('node src/main.ts run re-executes itself (same pid) with the heap flags', async () => {
    const sim = await simulator();
    const d = spawnDaemon(testEnv({ LETTA_BASE_URL: sim.url, WATCHER_LOG_LEVEL: 'info' }));
    await d.ready();
    const cmdline = readFileSync(`/proc/${d.pid}/cmdline`, 'utf8').split('\0');
    expect(cmdline).toEqual(expect.arrayContaining(['--max-semi-space-size=8', '--heap-growing-percent=100', '--no-allocation-site-pretenuring']));
    expect(await d.stop()).toBe(0);
  });
});
