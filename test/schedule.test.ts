import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { makeOutbox } from '../src/outbox.ts';
import { makeSchedule, type Schedule } from '../src/schedule.ts';
import { deletePrefix } from './support/harness.ts';

/** The Lua scripts' own promises, straight against Redis: fencing, leases, replayed claims. */
let redis: Redis;
let prefix: string;
let schedule: Schedule;
const limits = { batch: 1000, defaultMaxWatchMs: 3_600_000, maxEntryBytes: 65536, maxWatchCapMs: 86_400_000 };

beforeAll(() => {
  redis = new Redis(inject('redisUrl'));
});
afterAll(() => redis.disconnect());
afterEach(async () => {
  await deletePrefix(redis, prefix);
});

async function watch(...ids: string[]): Promise<void> {
  prefix = prefix ?? `sched-${Math.random().toString(36).slice(2, 10)}`;
  await redis.lpush(`${prefix}:intake`, ...ids);
  const r = await schedule.intake(limits, new Date().toISOString());
  expect(r.accepted).toBe(ids.length);
}

function fresh(replica = 'r1'): void {
  prefix = `sched-${Math.random().toString(36).slice(2, 10)}`;
  schedule = makeSchedule(redis, prefix, 1000, replica);
}

describe('claims', () => {
  it('a re-sent claim (same claim id) returns the same runs, not new ones', async () => {
    fresh();
    await watch('run-a', 'run-b', 'run-c', 'run-d');
    const first = await schedule.claim(2, 60_000, 'claim-1');
    const again = await schedule.claim(2, 60_000, 'claim-1');
    expect(first.claims.map((c) => [c.runId, c.token])).toHaveLength(2);
    expect(again.claims.map((c) => [c.runId, c.token])).toEqual(first.claims.map((c) => [c.runId, c.token]));
    const next = await schedule.claim(10, 60_000, 'claim-2');
    expect(next.claims.map((c) => c.runId).sort()).toEqual(
      ['run-a', 'run-b', 'run-c', 'run-d'].filter((id) => !first.claims.some((c) => c.runId === id)),
    );
  });

  it('a claim leases runs: they are not due again until the lease ends', async () => {
    fresh();
    await watch('run-a');
    expect((await schedule.claim(10, 60_000)).claims).toHaveLength(1);
    expect((await schedule.claim(10, 60_000)).claims).toHaveLength(0);
    fresh();
    await watch('run-b');
    expect((await schedule.claim(10, 1)).claims).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 5));
    expect((await schedule.claim(10, 60_000)).claims.map((c) => c.runId)).toEqual(['run-b']);
  });
});

describe('claims and settles in bulk', () => {
  it('claims and reschedules 1,200 runs in one call each (ZADD in chunks), all due again as asked', async () => {
    fresh();
    const ids = Array.from({ length: 1200 }, (_, i) => `run-${i}`);
    await redis.lpush(`${prefix}:intake`, ...ids);
    while ((await schedule.intake(limits, new Date().toISOString())).taken > 0);
    const first = await schedule.claim(5000, 60_000);
    expect(first.claims).toHaveLength(1200);
    expect((await schedule.claim(5000, 60_000)).claims).toHaveLength(0);
    const ok = await schedule.settle(
      first.claims.map((c) => ({ kind: 'R' as const, runId: c.runId, token: c.token, delayMs: 0, polled: true })),
      [],
    );
    expect(ok.every(Boolean)).toBe(true);
    const again = await schedule.claim(5000, 60_000);
    expect(again.claims.map((c) => c.runId).sort()).toEqual([...ids].sort());
    expect(again.claims.every((c) => c.polls === 1)).toBe(true);
  });

  it('counts a poll per claim, and gives it back when the run is rescheduled unpolled', async () => {
    fresh();
    await watch('run-p');
    const settleR = async (token: string, polled: boolean) =>
      expect(await schedule.settle([{ kind: 'R', runId: 'run-p', token, delayMs: 0, polled }], [])).toEqual([true]);
    let c = (await schedule.claim(1, 60_000)).claims[0]!;
    expect(c.polls).toBe(0);
    await settleR(c.token, true);
    c = (await schedule.claim(1, 60_000)).claims[0]!;
    expect(c.polls).toBe(1);
    await settleR(c.token, false); // handed back at shutdown: no request was made
    c = (await schedule.claim(1, 60_000)).claims[0]!;
    expect(c.polls).toBe(1);
    // A re-sent reschedule (its reply lost) is applied again but counts nothing twice.
    await settleR(c.token, true);
    await settleR(c.token, true);
    c = (await schedule.claim(1, 60_000)).claims[0]!;
    expect(c.polls).toBe(2);
  });

  it('refuses a token that is not one a claim returned', async () => {
    fresh();
    await watch('run-t');
    const c = (await schedule.claim(1, 60_000)).claims[0]!;
    const counter = c.token.split(':')[0]!;
    for (const token of [counter, `${counter}:`, `${counter}:${Date.now() - 1000}`, 'x', '']) {
      expect(await schedule.settle([{ kind: 'R', runId: 'run-t', token, delayMs: 0, polled: true }], [])).toEqual([false]);
    }
    expect(await schedule.settle([{ kind: 'R', runId: 'run-t', token: c.token, delayMs: 0, polled: true }], [])).toEqual([true]);
  });
});

describe('settling is fenced', () => {
  it('a replica whose run was re-claimed by another cannot commit a second event', async () => {
    fresh('replica-a');
    const other = makeSchedule(redis, prefix, 1000, 'replica-b');
    await watch('run-x');
    const a = (await schedule.claim(1, 1)).claims[0]!;
    await new Promise((r) => setTimeout(r, 5)); // A's lease ends
    const b = (await other.claim(1, 60_000)).claims[0]!;
    expect(b.token).not.toBe(a.token);
    const commit = (token: string) => ({ kind: 'C' as const, runId: 'run-x', token, eventJson: '{"id":"evt_x"}', eventId: 'evt_x' });
    expect(await schedule.settle([commit(a.token)], [])).toEqual([false]);
    expect(await other.settle([commit(b.token)], [])).toEqual([true]);
    expect(await other.settle([commit(b.token)], [])).toEqual([false]);
    expect(await redis.xlen(`${prefix}:events`)).toBe(1);
    expect(await redis.exists(`${prefix}:run:run-x`)).toBe(0);
    expect(await redis.zcard(`${prefix}:schedule`)).toBe(0);
  });

  it('a lease that has passed refuses even its own holder', async () => {
    fresh();
    await watch('run-y');
    const c = (await schedule.claim(1, 1)).claims[0]!;
    await new Promise((r) => setTimeout(r, 5));
    expect(await schedule.settle([{ kind: 'R', runId: 'run-y', token: c.token, delayMs: 1000, polled: true }], [])).toEqual([false]);
  });

  it('a commit records one delivery per configured target and per-run URL, in the same step', async () => {
    fresh();
    await redis.lpush(`${prefix}:intake`, JSON.stringify({ run_id: 'run-w', webhook_url: 'https://a.example/h' }));
    await redis.lpush(`${prefix}:intake`, JSON.stringify({ run_id: 'run-w', callback_url: 'https://b.example/h' }));
    await schedule.intake(limits, new Date().toISOString());
    const c = (await schedule.claim(1, 60_000)).claims[0]!;
    expect(await schedule.settle([{ kind: 'C', runId: 'run-w', token: c.token, eventJson: '{"id":"evt_w"}', eventId: 'evt_w' }], ['g:ops'])).toEqual([true]);
    expect((await redis.zrange(`${prefix}:outbox`, '0', '-1')).sort()).toEqual(['evt_w\ng:ops', 'evt_w\nl:https://b.example/h', 'evt_w\nu:https://a.example/h']);
    expect(await redis.hget(`${prefix}:evt:evt_w`, 'n')).toBe('3');
  });
});

describe('the outbox', () => {
  it('a re-sent delivery claim returns the same deliveries', async () => {
    fresh();
    await redis.hset(`${prefix}:evt:evt_1`, 'ev', '{"id":"evt_1"}', 'n', 2);
    await redis.zadd(`${prefix}:outbox`, '0', 'evt_1\ng:a', '0', 'evt_1\ng:b');
    // The outbox numbers its claims itself; two outboxes with one replica id share the record,
    // which is what a re-sent command looks like from Redis's side.
    const o1 = makeOutbox(redis, prefix, schedule.keys, 'rep');
    const o2 = makeOutbox(redis, prefix, schedule.keys, 'rep');
    const first = await o1.claim(1, 60_000);
    const again = await o2.claim(1, 60_000);
    expect(first.claims).toHaveLength(1);
    expect(again.claims.map((c) => [c.member, c.token])).toEqual(first.claims.map((c) => [c.member, c.token]));
  });
});

describe('intake', () => {
  it('dead-letters an empty metadata array like any other array, and keeps {} ', async () => {
    fresh();
    await redis.lpush(`${prefix}:intake`, '{"run_id":"run-1","metadata":[]}', '{"run_id":"run-2","metadata":{}}', '{"run_id":"run-3","metadata": [ ]}');
    const r = await schedule.intake(limits, new Date().toISOString());
    expect(r).toMatchObject({ accepted: 1, rejected: 2 });
    const dead = (await redis.lrange(`${prefix}:dead`, 0, -1)).map((d) => JSON.parse(d) as { reason: string });
    expect(dead.every((d) => d.reason === 'metadata is not a JSON object')).toBe(true);
  });
});
