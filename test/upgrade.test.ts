import { describe, expect, it } from 'vitest';
import { eventId } from '../src/events/event.ts';
import { V01_CLAIM, V01_INTAKE, V01_SETTLE } from './fixtures/v0.1-scripts.ts';
import { configFile, expectExactlyOnce, keys, readEvents, startDaemon, testConfig, useSuite, waitFor } from './kit/harness.ts';

/**
 * A daemon upgraded in place takes over what version 0.1 left in Redis: runs waiting in its
 * schedule, runs an 0.1 replica held a lease on when it went away, and webhook deliveries in
 * its outbox. The state is written by 0.1's own scripts (test/fixtures/v0.1-scripts.ts).
 */
const { redis, cleanup, simulator, receiver } = useSuite();

describe('upgrading from 0.1 in place', () => {
  it('runs waiting, runs leased by a 0.1 replica and 0.1 deliveries all finish exactly once', async () => {
    const sim = await simulator();
    const rx = await receiver({ secrets: [] });
    const config = testConfig({ LETTA_BASE_URL: sim.url, WATCHER_CONFIG: configFile({ webhooks: { targets: [{ url: `${rx.url}/hook`, name: 'hook' }] } }) });
    const P = config.redis.keyPrefix;
    const runs = Array.from({ length: 30 }, (_, i) => sim.createRun({ durationMs: 0, outcome: i % 3 === 0 ? 'failed' : 'completed' }));
    const ids = runs.map((r) => r.id);

    // 0.1's intake takes all 30 (5 with metadata).
    await redis.lpush(`${P}:intake`, ...ids.map((id, i) => (i < 5 ? JSON.stringify({ run_id: id, metadata: { n: i } }) : id)));
    await redis.eval(V01_INTAKE, 3, `${P}:intake`, `${P}:schedule`, `${P}:dead`, P, 1000, 3_600_000, 65_536, 2_592_000_000, new Date().toISOString());
    expect(await redis.zcard(`${P}:schedule`)).toBe(30);
    // A 0.1 replica claims 10 (a 2 s lease) and commits 5 of them, with a delivery each.
    const claimed = (await redis.eval(V01_CLAIM, 2, `${P}:schedule`, `${P}:claim:poll:old`, P, 10, 2000, 'c1')) as (string | number)[];
    const leaseEnd = String(claimed[2]);
    const held: { id: string; counter: string }[] = [];
    for (let i = 3; i + 4 < claimed.length; i += 5) held.push({ id: String(claimed[i]), counter: String(claimed[i + 1]) });
    expect(held).toHaveLength(10);
    const committed = held.slice(0, 5);
    const ops = committed.flatMap(({ id, counter }) => {
      const event = { id: eventId(id, 'run.completed'), type: 'run.completed', timestamp: new Date().toISOString(), data: { run_id: id, status: 'completed', run: null, metadata: null } };
      return ['C', id, counter, leaseEnd, JSON.stringify(event), event.id];
    });
    const done = (await redis.eval(V01_SETTLE, 4, `${P}:schedule`, `${P}:events`, `${P}:dead`, `${P}:outbox`, P, 100_000, 0, 1, 'g:hook', ...ops)) as number[];
    expect(done).toEqual([1, 1, 1, 1, 1]);
    expect(await redis.zcard(`${P}:outbox`)).toBe(5);
    expect(await redis.xlen(`${P}:events`)).toBe(5);

    // The new daemon starts on the same prefix.
    await startDaemon(cleanup, config);
    const k = keys(P);
    await waitFor(async () => (await readEvents(redis, P)).length === 30 && (await redis.hlen(k.runs)) === 0, {
      timeoutMs: 30_000,
      describe: async () => `${(await readEvents(redis, P)).length} events, ${await redis.hlen(k.runs)} runs left`,
    });
    // Every run once; the five 0.1 committed keep their event, the rest got theirs now.
    const events = await readEvents(redis, P);
    expectExactlyOnce(events, ids);
    const byRun = new Map(events.map((e) => [e.event.data.run_id, e.event]));
    for (const [i, id] of ids.entries()) {
      if (committed.some((c) => c.id === id)) continue;
      expect(byRun.get(id)?.type).toBe(`run.${runs[i]?.outcome}`);
    }
    // Metadata of the runs 0.1 took in (and did not commit) comes through the migration.
    const withMeta = ids.slice(0, 5).map((id, n) => ({ id, n })).filter(({ id }) => !committed.some((c) => c.id === id));
    expect(withMeta.length).toBeGreaterThan(0);
    for (const { id, n } of withMeta) expect(byRun.get(id)?.data.metadata).toEqual({ n });
    // Every delivery: the five 0.1 recorded and the 25 new ones.
    await waitFor(() => rx.deliveredIds('/hook').size === 30, { timeoutMs: 30_000, describe: () => `${rx.deliveredIds('/hook').size} of 30 webhooks` });
    expect(rx.deliveredIds('/hook')).toEqual(new Set(events.map((e) => e.event.id)));
    // Nothing of the 0.1 layout is left.
    const legacy = [`${P}:schedule`, `${P}:outbox`, ...ids.map((id) => `${P}:run:${id}`), ...committed.map((c) => `${P}:evt:${eventId(c.id, 'run.completed')}`)];
    expect(await redis.exists(...legacy)).toBe(0);
    expect(await redis.llen(k.dead)).toBe(0);
  });
});
