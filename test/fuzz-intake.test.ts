import { describe, expect, it } from 'vitest';
import type { Daemon } from '../src/daemon.ts';
import {
  keys,
  readDead,
  readEvents,
  startApiIn,
  startDaemon as startIn,
  testConfig,
  waitFor,
  type DeadLetter,
  useSuite,
} from './kit/harness.ts';
import { seeded } from '../tools/simulator/prng.ts';

/**
 * Bad input on the intake list. 10,000 generated entries (random bytes, huge strings, unicode
 * and NUL, path traversal, encoded slashes, JSON with wrong types, deep nesting, a 10 MB entry)
 * mixed with valid ones go through a running daemon (in-process) against a local API server
 * that records the path of every request. The daemon never stops; every invalid entry is in
 * P:dead with a reason (exactly as many as were pushed); no request leaves /v1/runs/{id}; every
 * valid run gets its event. The generator is seeded: the seed is printed, and
 * LRW_FUZZ_SEED=<seed> repeats a run.
 */

const TOTAL = 10_000;
const RUN_PATH = /^\/v1\/runs\/[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;
const VALID_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

// The generator's seed: LRW_FUZZ_SEED, else LRW_SEED, else a fresh one (printed once).
const { redis, cleanup, rng } = useSuite({ seedEnv: 'LRW_FUZZ_SEED' });

/** A Letta stand-in that records every request path and answers any well-formed ID as completed. */
interface RecordingApi {
  url: string;
  paths: string[];
}

async function recordingApi(): Promise<RecordingApi> {
  const paths: string[] = [];
  const api = await startApiIn(cleanup, (req, res) => {
    const path = req.url ?? '';
    paths.push(path);
    const id = path.startsWith('/v1/runs/') ? path.slice('/v1/runs/'.length) : '';
    if (req.method !== 'GET' || !VALID_ID.test(id)) {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"detail":"Invalid run ID format"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(
      JSON.stringify({
        id,
        agent_id: 'agent-fuzz',
        status: 'completed',
        stop_reason: 'end_turn',
        created_at: '2026-01-01T00:00:00.000Z',
        completed_at: '2026-01-01T00:00:01.000000',
      }),
    );
  });
  return { url: api.url, paths };
}

async function startDaemon(api: RecordingApi): Promise<{ daemon: Daemon; prefix: string }> {
  const config = testConfig({ LETTA_BASE_URL: api.url, WATCHER_SHUTDOWN_GRACE_MS: '500' });
  const daemon = await startIn(cleanup, config);
  return { daemon, prefix: config.redis.keyPrefix };
}

// ---------------------------------------------------------------------------------------------
// The generator

interface Valid {
  entry: string;
  runId: string;
  metadata: Record<string, unknown> | null;
}
interface Invalid {
  entry: string | Buffer;
  kind: string;
}

function generator(seed: number) {
  const rnd = seeded(seed);
  const int = (lo: number, hi: number) => lo + Math.floor(rnd() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
  const ID_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';
  let serial = 0;
  /** A valid, unique run ID of 6-128 characters (a fixed-width serial first, so no ID is another's prefix plus tail). */
  const validId = (length?: number): string => {
    const head = `v${(serial++).toString(36).padStart(5, '0')}`;
    const n = Math.max(head.length, length ?? int(head.length, 128));
    let s = head;
    while (s.length < n) s += ID_CHARS[Math.floor(rnd() * ID_CHARS.length)];
    return s;
  };
  const badId = () => `bad-${(serial++).toString(36)}`;
  const nest = (depth: number, leaf: unknown): unknown => {
    let v = leaf;
    for (let i = 0; i < depth; i++) v = { d: v };
    return v;
  };

  const unicode = ['ü', 'ñ', '\u0000', '\u202e', '\u200b', '🎉', 'ｒ', '١', 'Ω', '\ud800', '\t', '\u0085', '\u00a0', 'ß', '\u0301'];
  const traversal = [
    '../', '..', '.', '../../admin', 'run-1/../../admin', 'run-1/..%2F..%2Fadmin', '..%2F..%2Fadmin', 'run-1%2F..%2Fadmin',
    '%2e%2e%2f', '%2F', 'run-1/', '/v1/agents', 'run-1?x=1', 'run-1#frag', 'run-1\\..\\admin', 'run 1', '-run', '_run',
    'run-1;rm -rf /', 'http://evil.example/', 'run-1%00', 'run-1\r\nX-Injected: 1', '..;/admin', '%252e%252e%252f',
  ];

  const invalidMakers: readonly (readonly [string, () => string | Buffer])[] = [
    ['random bytes', () => {
      const b = Buffer.alloc(int(1, 300));
      for (let i = 0; i < b.length; i++) b[i] = int(0, 255);
      // Never a valid ID, never JSON, never blank: the first byte is one no ID starts with.
      b[0] = pick([0x00, 0xff, 0x2f, 0x2e, 0x25, 0x80, 0xc3, 0x2d, 0x5f, 0x7f]);
      return b;
    }],
    ['huge string', () => pick(['a', 'run-', '{', '9']).repeat(int(65_537, 100_000))],
    ['129-character ID', () => validId(128) + pick(['a', '0', '_', '-'])],
    ['unicode or NUL in an ID', () => {
      const id = validId(int(2, 60));
      const at = int(1, id.length - 1);
      return id.slice(0, at) + pick(unicode) + id.slice(at);
    }],
    ['path traversal / encoded slash', () => pick(traversal)],
    ['traversal as JSON run_id', () => JSON.stringify({ run_id: pick(traversal) })],
    ['unicode as JSON run_id', () => JSON.stringify({ run_id: `run${pick(unicode)}${int(0, 1e6)}` })],
    ['JSON: run_id of the wrong type', () => `{"run_id":${pick(['123', 'null', '["run-1"]', '{"id":"run-1"}', 'true', '""', '1.5', '-1'])}}`],
    ['JSON: no run_id', () => pick(['{}', '{"id":"run-1"}', '{"runId":"run-1"}', '{"RUN_ID":"run-1"}', `{"metadata":{"a":1}}`])],
    ['JSON: metadata of the wrong type', () => `{"run_id":"${badId()}","metadata":${pick(['"str"', '5', '[1,2]', '[]', 'true', '[{"a":1}]'])}}`],
    ['JSON: max_watch_ms of the wrong type', () => `{"run_id":"${badId()}","max_watch_ms":${pick(['"1000"', '-5', '0', '1.5', '1e20', 'true', '[1000]', '{"ms":1}'])}}`],
    ['JSON: bad webhook_url', () => `{"run_id":"${badId()}","webhook_url":${pick(['5', '"ftp://x.example/"', '"javascript:alert(1)"', '"http://"', '"http://a b/"', '"https://ok.example/\\u0000"', '["https://a.example/"]', `"https://${'a'.repeat(2100)}.example/"`])}}`],
    ['JSON: bad callback_url', () => `{"run_id":"${badId()}","callback_url":${pick(['{}', '"file:///etc/passwd"', '"//x.example/"', '7'])}}`],
    ['JSON: webhook_url and callback_url differ', () => JSON.stringify({ run_id: badId(), webhook_url: 'https://a.example/h', callback_url: 'https://b.example/h' })],
    ['not JSON but starts with {', () => pick(['{', '{run_id: "run-1"}', `{"run_id":"${badId()}"`, `{"run_id":"${badId()}",}`, "{'run_id':'run-1'}", `{"run_id":"${badId()}"} trailing`])],
    ['JSON array or scalar', () => pick(['[]', '["run-1"]', '"run-1"', '[null]', '-1', '1.5', '"x"'])],
    ['deep nesting', () => {
      // Past any parser's depth limit (cjson: 1000), within the 64 KiB size limit.
      const depth = int(1001, 10_000);
      return pick([
        () => '['.repeat(depth) + ']'.repeat(depth),
        () => `{"run_id":${'['.repeat(depth)}${']'.repeat(depth)}}`,
        () => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`,
        () => `{"run_id":${'{"d":'.repeat(depth)}"run-1"${'}'.repeat(depth)}}`,
      ])();
    }],
    ['metadata nested past the intake limit', () => JSON.stringify({ run_id: badId(), metadata: nest(int(32, 999), 'leaf') })],
    ['blank', () => pick(['', ' ', '\t\n', '\r\n\r\n'])],
  ];

  const validMakers: readonly (() => Valid)[] = [
    () => {
      const id = validId();
      return { entry: id, runId: id, metadata: null };
    },
    () => {
      const id = validId(128);
      return { entry: id, runId: id, metadata: null };
    },
    () => {
      const id = validId(int(1, 40));
      return { entry: JSON.stringify({ run_id: id }), runId: id, metadata: null };
    },
    () => {
      const id = validId(int(1, 40));
      const metadata = { order: int(0, 1e6), note: `ü 🎉 \u0000 ${pick(traversal)}`, list: [1, 'two', null, { three: 3 }], empty: {} };
      return { entry: JSON.stringify({ run_id: id, metadata }), runId: id, metadata };
    },
    () => {
      const id = validId(int(1, 40));
      return { entry: JSON.stringify({ run_id: id, metadata: null, webhook_url: null, callback_url: null }), runId: id, metadata: null };
    },
    () => {
      const id = validId(int(1, 40));
      return { entry: JSON.stringify({ run_id: id, metadata: {}, max_watch_ms: int(60_000, 86_400_000) }), runId: id, metadata: {} };
    },
    () => {
      // Deep, but within the intake's limit of 32 levels (the entry and its metadata count too).
      const id = validId(int(1, 40));
      const metadata = nest(int(10, 31), 'leaf') as Record<string, unknown>;
      return { entry: JSON.stringify({ run_id: id, metadata }), runId: id, metadata };
    },
  ];

  return {
    valid: (): Valid => pick(validMakers)(),
    invalid: (): Invalid => {
      const [kind, make] = pick(invalidMakers);
      return { kind, entry: make() };
    },
    shuffle<T>(xs: T[]): T[] {
      for (let i = xs.length - 1; i > 0; i--) {
        const j = Math.floor(rnd() * (i + 1));
        [xs[i], xs[j]] = [xs[j] as T, xs[i] as T];
      }
      return xs;
    },
    rnd,
  };
}

function byteLength(e: string | Buffer): number {
  return typeof e === 'string' ? Buffer.byteLength(e) : e.length;
}

function sorted(xs: readonly number[]): number[] {
  return [...xs].sort((a, b) => a - b);
}

async function waitForIntakeDone(prefix: string, events: number, dead: number, explain: () => Promise<string> = async () => ''): Promise<void> {
  const k = keys(prefix);
  await waitFor(
    async () =>
      (await redis.llen(k.intake)) === 0 &&
      (await redis.llen(k.dead)) >= dead &&
      (await redis.xlen(k.events)) >= events &&
      (await redis.zcard(k.due)) === 0,
    {
      timeoutMs: 45_000,
      intervalMs: 100,
      describe: async () =>
        `intake ${await redis.llen(k.intake)}, dead ${await redis.llen(k.dead)}/${dead}, events ${await redis.xlen(k.events)}/${events}, watched ${await redis.zcard(k.due)}${await explain()}`,
    },
  );
}

describe('fuzzed intake entries', () => {
  it(`10,000 generated entries: invalid ones dead-lettered with a reason, valid ones watched, no request leaves /v1/runs/{id}`, async () => {
    const gen = generator(rng.seed);
    const valid: Valid[] = [];
    const invalid: Invalid[] = [];
    // The 10 MB entry: JSON that would be valid but for its size.
    invalid.push({ kind: '10 MB entry', entry: JSON.stringify({ run_id: 'bad-10mb', metadata: { pad: 'x'.repeat(10 * 1024 * 1024) } }) });
    while (valid.length + invalid.length < TOTAL) {
      if (gen.rnd() < 0.3) valid.push(gen.valid());
      else invalid.push(gen.invalid());
    }
    const entries = gen.shuffle<{ valid?: Valid; invalid?: Invalid }>([...valid.map((v) => ({ valid: v })), ...invalid.map((i) => ({ invalid: i }))]);
    const kinds = new Map<string, number>();
    for (const i of invalid) kinds.set(i.kind, (kinds.get(i.kind) ?? 0) + 1);
    console.log(`fuzz-intake: ${valid.length} valid, ${invalid.length} invalid: ${JSON.stringify(Object.fromEntries(kinds))}`);

    const api = await recordingApi();
    const { daemon, prefix } = await startDaemon(api);
    const k = keys(prefix);
    // Pushed while the daemon runs, in producer-sized chunks.
    for (let i = 0; i < entries.length; i += 250) {
      const chunk = entries.slice(i, i + 250).map((e) => (e.valid ? e.valid.entry : (e.invalid as Invalid).entry));
      await redis.lpush(k.intake, ...chunk);
    }
    await waitForIntakeDone(prefix, valid.length, invalid.length, async () => {
      const seen = new Set((await readEvents(redis, prefix)).map((e) => e.event.data.run_id));
      const polled = new Set(api.paths);
      const lost = valid.filter((v) => !seen.has(v.runId)).slice(0, 5);
      return lost.map((v) => `\n  no event: ${JSON.stringify(v.entry).slice(0, 300)} (polled: ${polled.has(`/v1/runs/${v.runId}`)})`).join('');
    });

    // The daemon never stopped.
    expect(daemon.state).toBe('running');
    expect(daemon.stalledLoops()).toEqual([]);

    // Exactly one dead letter per invalid entry, each with a reason; byte sizes match one to one.
    const dead: DeadLetter[] = await readDead(redis, prefix);
    expect(dead.length).toBe(invalid.length);
    const noReason = dead.filter((d) => d.kind !== 'intake' || typeof d.reason !== 'string' || d.reason.length === 0 || typeof d.at !== 'string');
    expect(noReason).toEqual([]);
    expect(sorted(dead.map((d) => Number(d['entry_bytes'])))).toEqual(sorted(invalid.map((i) => byteLength(i.entry))));
    // Short text entries come back verbatim (longer ones are cut at 1 KiB).
    const shortText = (e: string | Buffer) => typeof e === 'string' && Buffer.byteLength(e) <= 1024;
    const expectedText = invalid.filter((i) => shortText(i.entry)).map((i) => Buffer.from(i.entry as string).toString('utf8')).sort();
    const deadText = new Map<string, number>();
    for (const d of dead) if (Number(d['entry_bytes']) <= 1024) deadText.set(d.entry, (deadText.get(d.entry) ?? 0) + 1);
    const notVerbatim: string[] = [];
    for (const t of expectedText) {
      if (t.includes('\ufffd')) continue; // a lone surrogate, sent as U+FFFD: compared by size above
      const n = deadText.get(t) ?? 0;
      if (n === 0) notVerbatim.push(t);
      else deadText.set(t, n - 1);
    }
    expect(notVerbatim).toEqual([]);
    const tooBig = dead.find((d) => Number(d['entry_bytes']) > 10 * 1024 * 1024);
    expect(tooBig?.reason).toMatch(/bytes, more than the limit of 65536/);
    expect(Buffer.byteLength(tooBig?.entry ?? '')).toBeLessThanOrEqual(1024);

    // Every valid run got exactly one event, with its metadata intact.
    const events = await readEvents(redis, prefix);
    expect(events.length).toBe(valid.length);
    const byRun = new Map(events.map((e) => [e.event.data.run_id, e.event]));
    expect(byRun.size).toBe(valid.length);
    const wrong: string[] = [];
    for (const v of valid) {
      const e = byRun.get(v.runId);
      if (!e) wrong.push(`${v.runId}: no event`);
      else if (e.type !== 'run.completed') wrong.push(`${v.runId}: ${e.type}`);
      else if (JSON.stringify(e.data.metadata) !== JSON.stringify(v.metadata)) wrong.push(`${v.runId}: metadata ${JSON.stringify(e.data.metadata).slice(0, 80)}`);
    }
    expect(wrong).toEqual([]);

    // No request left /v1/runs/{id}, and only valid runs were asked about.
    const strayPaths = api.paths.filter((p) => !RUN_PATH.test(p));
    expect(strayPaths).toEqual([]);
    expect(new Set(api.paths.map((p) => p.slice('/v1/runs/'.length)))).toEqual(new Set(valid.map((v) => v.runId)));

    // The counters agree.
    const metrics = await daemon.metrics.registry.metrics();
    expect(metrics).toContain(`letta_watcher_intake_total{result="rejected"} ${invalid.length}`);
    expect(metrics).toContain(`letta_watcher_intake_total{result="accepted"} ${valid.length}`);
    expect(metrics).toContain(`letta_watcher_dead_letters_total{kind="intake"} ${invalid.length}`);

    // And it still works.
    await redis.lpush(k.intake, 'after-the-fuzz');
    await waitFor(async () => (await redis.xlen(k.events)) === valid.length + 1, { timeoutMs: 10_000 });
    expect(await redis.llen(k.dead)).toBe(invalid.length);
  }, 90_000);

  it('JSON extensions that are not JSON (NaN, Infinity, hex numbers) are dead-lettered, not watched', async () => {
    // Redis's Lua cjson decodes these by default; RFC 8259 JSON does not have them, and
    // the daemon's own JSON.parse of the stored entry cannot read them back.
    const notJson = [
      '{"run_id":"nj-hex","max_watch_ms":0x3e8}',
      '{"run_id":"nj-nan","metadata":{"n":NaN}}',
      '{"run_id":"nj-inf","metadata":{"n":Infinity}}',
      '{"run_id":"nj-neginf","metadata":{"n":-Infinity}}',
      '{"run_id":"nj-hexmeta","metadata":{"n":0x10}}',
    ];
    for (const s of notJson) expect(() => JSON.parse(s)).toThrow();
    const api = await recordingApi();
    const { prefix } = await startDaemon(api);
    const k = keys(prefix);
    await redis.lpush(k.intake, ...notJson, 'nj-control');
    await waitFor(async () => (await redis.llen(k.intake)) === 0 && (await redis.xlen(k.events)) >= 1 && (await redis.zcard(k.due)) === 0, {
      timeoutMs: 10_000,
    });
    const dead = await readDead(redis, prefix);
    const events = await readEvents(redis, prefix);
    expect({
      dead: dead.map((d) => d.entry).sort(),
      events: events.map((e) => e.event.data.run_id),
      polled: api.paths,
    }).toEqual({ dead: [...notJson].sort(), events: ['nj-control'], polled: ['/v1/runs/nj-control'] });
  });
});
