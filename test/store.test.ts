import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { layoutFor, partitionIndex, partitionTag, SLOTS } from '../src/redis/keys.ts';
import { defineScripts } from '../src/redis/scripts.ts';
import type { StoreContext } from '../src/redis/context.ts';
import { makeIntakeStore, type IntakeLimits } from '../src/intake/store.ts';
import { makeOutbox } from '../src/webhooks/outbox.ts';
import { makeRunStore, type RunClaim, type RunSettle } from '../src/polling/runs.ts';
import calculateSlot from 'cluster-key-slot';
import { deletePrefix } from './kit/harness.ts';

/**
 * The store's operations straight against Redis: leases and fences, replayed claims, bulk
 * claims and settles, poll counting, commits recording deliveries, and the intake in both of
 * its modes (one partition: one script; N partitions: the reliable-queue move).
 */
let redis: Redis;
const prefixes: string[] = [];
const limits: IntakeLimits = { batch: 1000, batchBytes: 1 << 20, maxEntryBytes: 65536, defaultMaxWatchMs: 3_600_000, maxWatchCapMs: 86_400_000, maxDepth: 32, maxTargetsPerRun: 16 };

beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(() => redis.disconnect());
afterEach(async () => {
  for (const p of prefixes.splice(0)) await deletePrefix(redis, p);
});

function store(partitions = 1, replica = 'r1', prefix = `store-${randomBytes(5).toString('hex')}`): StoreContext {
  prefixes.push(prefix);
  return { client: redis, scripts: defineScripts(redis), layout: layoutFor(prefix, partitions), replica };
}

async function watch(ctx: StoreContext, ...ids: string[]): Promise<void> {
  await redis.lpush(ctx.layout.intake, ...ids);
  const intake = makeIntakeStore(ctx, limits);
  let accepted = 0;
  for (;;) {
    const r = await intake.take();
    accepted += r.accepted;
    if (r.taken === 0) break;
  }
  expect(accepted).toBe(ids.length);
}

const reschedule = (c: RunClaim, delayMs = 0, polled = true): RunSettle => ({ kind: 'reschedule', runId: c.runId, counter: c.counter, delayMs, polled });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('claims', () => {
  it('a watch record no version wrote is dead-lettered as valid UTF-8 JSON, and the run leaves the schedule', async () => {
    const ctx = store();
    await watch(ctx, 'run-a');
    const p = ctx.layout.partitions[0]!;
    // Bytes that are not UTF-8 (a foreign writer, a corrupted restore).
    await redis.hset(p.runs, 'run-a', Buffer.from([0x78, 0xff, 0xfe, 0x3a, 0x31]));
    const r = await makeRunStore(ctx).claim(0, 10, 60_000);
    expect(r.claims).toEqual([]);
    expect(await redis.zscore(p.due, 'run-a')).toBeNull();
    const [raw] = await redis.lrangeBuffer(p.dead, 0, -1);
    const text = raw!.toString('utf8');
    expect(Buffer.from(text, 'utf8').equals(raw!), 'the dead letter is valid UTF-8').toBe(true);
    expect(JSON.parse(text)).toMatchObject({ kind: 'run', reason: 'unreadable watch record', entry: 'run-a', record: 'x\uFFFD\uFFFD:1' });
  });

  it('a re-sent claim (its reply lost) returns the same runs, not new ones', async () => {
    const ctx = store();
    await watch(ctx, 'run-a', 'run-b', 'run-c', 'run-d');
    // Two stores with one replica id share the last-claim record and both number claims from
    // 1: that is what a re-sent command looks like from Redis's side.
    const first = await makeRunStore(ctx).claim(0, 2, 60_000);
    const again = await makeRunStore(ctx).claim(0, 2, 60_000);
    expect(first.claims).toHaveLength(2);
    expect(again.claims.map((c) => [c.runId, c.counter])).toEqual(first.claims.map((c) => [c.runId, c.counter]));
  });

  it('a claim leases runs: they are not due again until the lease ends, and then they are', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    await watch(ctx, 'run-a');
    expect((await runs.claim(0, 10, 200)).claims).toHaveLength(1);
    expect((await runs.claim(0, 10, 200)).claims).toHaveLength(0);
    await sleep(250);
    expect((await runs.claim(0, 10, 60_000)).claims.map((c) => c.runId)).toEqual(['run-a']);
  });

  it('a renewed lease holds past its first end; a lease renewed by a replica that lost the run does not', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    await watch(ctx, 'run-r');
    const c = (await runs.claim(0, 1, 300)).claims[0]!;
    await sleep(150);
    expect(await runs.renew(0, [c], 300)).toEqual([true]);
    await sleep(200);
    expect((await runs.claim(0, 1, 300)).claims).toHaveLength(0);
    await sleep(200);
    const other = makeRunStore(store(1, 'r2', ctx.layout.prefix));
    const taken = (await other.claim(0, 1, 60_000)).claims[0]!;
    expect(taken.runId).toBe('run-r');
    expect(await runs.renew(0, [c], 60_000)).toEqual([false]);
    expect(await runs.settle(0, [reschedule(c)], 0)).toEqual([false]);
  });
});

describe('claims and settles in bulk', () => {
  it('claims and reschedules 1,200 runs in one call each, all due again as asked', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    const ids = Array.from({ length: 1200 }, (_, i) => `run-${i}`);
    await watch(ctx, ...ids);
    const first = await runs.claim(0, 5000, 60_000);
    expect(first.claims).toHaveLength(1200);
    expect((await runs.claim(0, 5000, 60_000)).claims).toHaveLength(0);
    expect((await runs.settle(0, first.claims.map((c) => reschedule(c)), 0)).every(Boolean)).toBe(true);
    const again = await runs.claim(0, 5000, 60_000);
    expect(again.claims.map((c) => c.runId).sort()).toEqual([...ids].sort());
    expect(again.claims.every((c) => c.polls === 1)).toBe(true);
  });

  it('counts a poll per claim, gives it back when rescheduled unpolled, and remembers created_at', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    await watch(ctx, 'run-p');
    const claim = async () => (await runs.claim(0, 1, 60_000)).claims[0]!;
    let c = await claim();
    expect(c.polls).toBe(0);
    expect(c.createdAt).toBeUndefined();
    expect(await runs.settle(0, [{ kind: 'reschedule', runId: c.runId, counter: c.counter, delayMs: 0, polled: true, createdAt: 1_760_000_000_123 }], 0)).toEqual([true]);
    c = await claim();
    expect(c.polls).toBe(1);
    expect(c.createdAt).toBe(1_760_000_000_123);
    expect(await runs.settle(0, [reschedule(c, 0, false)], 0)).toEqual([true]);
    c = await claim();
    expect(c.polls).toBe(1);
    // A re-sent reschedule (its reply lost) is applied again but counts nothing twice.
    expect(await runs.settle(0, [reschedule(c, 100)], 0)).toEqual([true]);
    expect(await runs.settle(0, [reschedule(c, 100)], 0)).toEqual([true]);
    await sleep(120);
    expect((await claim()).polls).toBe(2);
  });

  it('refuses a counter that is not the one its claim returned', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    await watch(ctx, 'run-t');
    const c = (await runs.claim(0, 1, 60_000)).claims[0]!;
    for (const counter of [String(Number(c.counter) + 1), String(Number(c.counter) - 1), 'x', '']) {
      expect(await runs.settle(0, [{ ...reschedule(c), counter }], 0)).toEqual([false]);
    }
    expect(await runs.settle(0, [reschedule(c)], 0)).toEqual([true]);
  });
});

describe('settling is fenced', () => {
  it('a replica whose run was re-claimed by another cannot commit a second event', async () => {
    const ctx = store(1, 'replica-a');
    const a = makeRunStore(ctx);
    const b = makeRunStore(store(1, 'replica-b', ctx.layout.prefix));
    await watch(ctx, 'run-x');
    const ca = (await a.claim(0, 1, 1)).claims[0]!;
    await sleep(5); // A's lease ends
    const cb = (await b.claim(0, 1, 60_000)).claims[0]!;
    expect(cb.counter).not.toBe(ca.counter);
    const commit = (c: RunClaim): RunSettle => ({ kind: 'commit', runId: 'run-x', counter: c.counter, eventJson: '{"id":"evt_x"}', eventId: 'evt_x', targets: [] });
    expect(await a.settle(0, [commit(ca)], 0)).toEqual([false]);
    expect(await b.settle(0, [commit(cb)], 0)).toEqual([true]);
    expect(await b.settle(0, [commit(cb)], 0)).toEqual([false]);
    const p = ctx.layout.partitions[0]!;
    expect(await redis.xlen(p.events)).toBe(1);
    expect(await redis.hlen(p.runs)).toBe(0);
    expect(await redis.zcard(p.due)).toBe(0);
  });

  it('a lease that has passed refuses even its own holder', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    await watch(ctx, 'run-y');
    const c = (await runs.claim(0, 1, 1)).claims[0]!;
    await sleep(5);
    expect(await runs.settle(0, [reschedule(c, 1000)], 0)).toEqual([false]);
  });

  it('a commit records one delivery per configured target and per-run URL, in the same step', async () => {
    const ctx = store();
    const runs = makeRunStore(ctx);
    await watch(ctx, JSON.stringify({ run_id: 'run-w', webhook_url: 'https://a.example/h' }));
    await redis.lpush(ctx.layout.intake, JSON.stringify({ run_id: 'run-w', callback_url: 'https://b.example/h' }));
    await makeIntakeStore(ctx, limits).take();
    const c = (await runs.claim(0, 1, 60_000)).claims[0]!;
    expect(await runs.settle(0, [{ kind: 'commit', runId: 'run-w', counter: c.counter, eventJson: '{"id":"evt_w"}', eventId: 'evt_w', targets: ['g:ops'] }], 0)).toEqual([true]);
    const p = ctx.layout.partitions[0]!;
    expect((await redis.zrange(p.webhooks, '0', '-1')).sort()).toEqual(['evt_w\ng:ops', 'evt_w\nl:https://b.example/h', 'evt_w\nu:https://a.example/h']);
    expect(await redis.hget(p.payloads, 'evt_w#n')).toBe('3');
  });
});

describe('the outbox', () => {
  it('a re-sent delivery claim returns the same deliveries; a delivery settled last drops its payload', async () => {
    const ctx = store();
    const p = ctx.layout.partitions[0]!;
    await redis.hset(p.payloads, 'evt_1', '{"id":"evt_1"}', 'evt_1#n', 2);
    await redis.hset(p.attempts, 'evt_1\ng:a', '0:0', 'evt_1\ng:b', '0:0');
    await redis.zadd(p.webhooks, '0', 'evt_1\ng:a', '0', 'evt_1\ng:b');
    const first = await makeOutbox(ctx).claim(0, 1, 60_000);
    const outbox = makeOutbox(ctx);
    const again = await outbox.claim(0, 1, 60_000);
    expect(first.claims).toHaveLength(1);
    expect(again.claims.map((c) => [c.member, c.counter])).toEqual(first.claims.map((c) => [c.member, c.counter]));
    const rest = await outbox.claim(0, 10, 60_000);
    const all = [...first.claims, ...rest.claims];
    expect(all.map((c) => c.targetKey).sort()).toEqual(['g:a', 'g:b']);
    expect(await outbox.settle(0, all.map((c) => ({ kind: 'delivered', member: c.member, counter: c.counter })))).toEqual([true, true]);
    expect(await redis.exists(p.payloads, p.attempts, p.webhooks)).toBe(0);
  });
});

describe('intake', () => {
  it('dead-letters an empty metadata array like any other array, and keeps {}', async () => {
    const ctx = store();
    await redis.lpush(ctx.layout.intake, '{"run_id":"run-1","metadata":[]}', '{"run_id":"run-2","metadata":{}}', '{"run_id":"run-3","metadata": [ ]}');
    const r = await makeIntakeStore(ctx, limits).take();
    expect(r).toMatchObject({ accepted: 1, rejected: 2 });
    const dead = (await redis.lrange(ctx.layout.partitions[0]!.dead, 0, -1)).map((d) => JSON.parse(d) as { reason: string });
    expect(dead.every((d) => d.reason === 'metadata is not a JSON object')).toBe(true);
  });

  it('adds a per-run target to a watched run, and refuses more than the limit', async () => {
    const ctx = store();
    const intake = makeIntakeStore(ctx, { ...limits, maxTargetsPerRun: 2 });
    const entries = [1, 2, 3, 2].map((i) => JSON.stringify({ run_id: 'run-m', webhook_url: `https://h${i}.example/x` }));
    await redis.lpush(ctx.layout.intake, ...entries);
    expect(await intake.take()).toEqual({ taken: 4, accepted: 1, duplicates: 2, rejected: 1 });
    const dead = JSON.parse((await redis.lindex(ctx.layout.partitions[0]!.dead, 0)) ?? '{}') as { reason: string };
    expect(dead.reason).toBe('run run-m already has 2 webhook targets');
  });
});

describe('partitions', () => {
  it('partition tags fall in equal ranges of the slot space, and a run always lands in the same one', () => {
    for (const n of [2, 3, 6, 16]) {
      for (let i = 0; i < n; i++) {
        const slot = calculateSlot(partitionTag(i, n));
        expect(slot).toBeGreaterThanOrEqual(Math.floor((i * SLOTS) / n));
        expect(slot).toBeLessThan(Math.floor(((i + 1) * SLOTS) / n));
      }
    }
    const l = layoutFor('lw', 6);
    expect(new Set(l.partitions.map((p) => calculateSlot(p.due))).size).toBe(6);
    for (const p of l.partitions) for (const k of [p.runs, p.events, p.webhooks, p.dead]) expect(calculateSlot(k)).toBe(calculateSlot(p.due));
    expect(calculateSlot(l.intakeProcessing('r1'))).toBe(calculateSlot(l.intake));
    expect(partitionIndex('run-abc', 6)).toBe(partitionIndex('run-abc', 6));
    const spread = new Map<number, number>();
    for (let i = 0; i < 6000; i++) spread.set(partitionIndex(`run-${i}`, 6), (spread.get(partitionIndex(`run-${i}`, 6)) ?? 0) + 1);
    for (const count of spread.values()) expect(count).toBeGreaterThan(800);
  });

  it('with 4 partitions each entry lands in its run\'s partition, once, and nothing stays in a processing list', async () => {
    const ctx = store(4);
    const ids = Array.from({ length: 200 }, (_, i) => `run-${i}`);
    const entries = [...ids, ...ids.slice(0, 50).map((id) => JSON.stringify({ run_id: id, metadata: { again: true } })), '{bad', 'x/y'];
    await redis.lpush(ctx.layout.intake, ...entries);
    const intake = makeIntakeStore(ctx, { ...limits, batch: 64 });
    const total = { accepted: 0, duplicates: 0, rejected: 0 };
    for (;;) {
      const r = await intake.take();
      if (r.taken === 0) break;
      total.accepted += r.accepted;
      total.duplicates += r.duplicates;
      total.rejected += r.rejected;
    }
    expect(total).toEqual({ accepted: 200, duplicates: 50, rejected: 2 });
    for (const p of ctx.layout.partitions) {
      for (const id of await redis.hkeys(p.runs)) expect(partitionIndex(id, 4)).toBe(p.index);
    }
    const sizes = await Promise.all(ctx.layout.partitions.map((p) => redis.hlen(p.runs)));
    expect(sizes.reduce((a, b) => a + b, 0)).toBe(200);
    expect(await redis.llen(ctx.layout.intakeProcessing('r1'))).toBe(0);
    expect(await redis.llen(ctx.layout.intake)).toBe(0);
  });
});

describe('the partitioned intake move is crash-safe at every step', () => {
  /** The move's three steps, run by hand as replica `replica` would (see store/intake.ts). */
  function steps(ctx: StoreContext, replica: string) {
    const l = ctx.layout;
    const n = l.partitions.length;
    return {
      async take(orphan = ''): Promise<{ batch: string; entries: string[] }> {
        const r = (await ctx.scripts.run('intake-take', [l.intake, l.intakeProcessing(replica), l.intakeBatch(replica), l.intakeReplicas,
          orphan ? l.intakeProcessing(orphan) : l.intakeProcessing(replica), orphan ? l.intakeBatch(orphan) : l.intakeBatch(replica)],
        [replica, 60_000, 1000, 1 << 20, `batch-${replica}-${Math.random()}`, orphan])) as string[];
        const [batch = '', ...entries] = r;
        return { batch, entries };
      },
      async apply(batch: string, entries: string[], only?: (p: number) => boolean): Promise<number> {
        let accepted = 0;
        for (const p of l.partitions) {
          if (only && !only(p.index)) continue;
          const pairs = entries.flatMap((raw, i) => (partitionIndex(raw, n) === p.index ? [`${batch}:${i}`, raw] : []));
          if (pairs.length === 0) continue;
          const r = (await ctx.scripts.run('intake', [p.due, p.due, p.runs, p.entries, p.dead, p.moved], ['args', pairs.length / 2, 1 << 30,
            limits.maxEntryBytes, limits.defaultMaxWatchMs, limits.maxWatchCapMs, limits.maxDepth, limits.maxTargetsPerRun, new Date().toISOString(), 900_000, p.index, n, ...pairs])) as number[];
          accepted += Number(r[1]);
        }
        return accepted;
      },
      done: (batch: string) => ctx.scripts.run('intake-done', [l.intakeProcessing(replica), l.intakeBatch(replica)], [batch]),
    };
  }

  async function watchedOnce(ctx: StoreContext, ids: string[]): Promise<void> {
    const watched: string[] = [];
    for (const p of ctx.layout.partitions) watched.push(...(await redis.hkeys(p.runs)));
    expect(watched.sort()).toEqual([...ids].sort());
    expect(await redis.llen(ctx.layout.intake)).toBe(0);
    for (const r of ['dead', 'heir']) expect(await redis.llen(ctx.layout.intakeProcessing(r))).toBe(0);
  }

  for (const [step, crash] of [
    ['after the batch moved into its processing list', async () => {}],
    ['after some partitions took their entries', async (s: ReturnType<typeof steps>, b: { batch: string; entries: string[] }) => void (await s.apply(b.batch, b.entries, (p) => p % 2 === 0))],
    ['after every partition took its entries, before the batch was dropped', async (s: ReturnType<typeof steps>, b: { batch: string; entries: string[] }) => void (await s.apply(b.batch, b.entries))],
  ] as const) {
    it(`a replica dying ${step}: the batch is adopted and every entry lands once`, async () => {
      const ctx = store(4);
      const ids = Array.from({ length: 120 }, (_, i) => `run-${step.length}-${i}`);
      await redis.lpush(ctx.layout.intake, ...ids);
      const dead = steps(ctx, 'dead');
      const batch = await dead.take();
      expect(batch.entries).toHaveLength(120);
      await crash(dead, batch);
      // The dead replica's liveness runs out; another replica adopts its list.
      await redis.zadd(ctx.layout.intakeReplicas, '1', 'dead');
      const heir = steps(ctx, 'heir');
      const adopted = await heir.take('dead');
      expect(adopted).toEqual(batch);
      await heir.apply(adopted.batch, adopted.entries);
      expect(await heir.done(adopted.batch)).toBe(1);
      await watchedOnce(ctx, ids);
      // The dead one, had it only stalled, finds its batch gone and cannot drop another's.
      expect(await dead.done(batch.batch)).toBe(0);
    });
  }

  it('a live replica\'s processing list is not adopted', async () => {
    const ctx = store(2);
    await redis.lpush(ctx.layout.intake, 'run-a', 'run-b');
    const live = steps(ctx, 'live');
    const b = await live.take();
    expect(b.entries).toHaveLength(2);
    expect(await steps(ctx, 'other').take('live')).toEqual({ batch: '', entries: [] });
    expect(await redis.llen(ctx.layout.intakeProcessing('live'))).toBe(2);
  });
});
