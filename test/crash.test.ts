import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import type { Simulator } from '../tools/simulator/server.ts';
import { startRedisServer } from './kit/redis-server.ts';
import {
  expectExactlyOnce,
  configFile,
  enqueue,
  keys,
  readEvents,
  redisNow,
  settledEvents,
  shortLease,
  spawnDaemon,
  testEnv,
  waitFor,
  waitForEvents,
  type SpawnedDaemon,
  type StreamEvent,
  useSuite,
} from './kit/harness.ts';
import { createRuns, Runs } from './kit/runs.ts';

/**
 * The real binary (`node src/main.ts run`) as child processes: kill -9 at random moments,
 * several replicas, SIGTERM. At the end, every run has exactly one event in P:events. The
 * moments, the victims, the runs' durations and outcomes are drawn from the suite's seed
 * (printed; LRW_SEED=<seed> repeats them).
 */

const { redis, rng, simulator } = useSuite();
/** main.ts's backstop: it exits this long after the stop even if a handle is still open. */
const EXIT_BACKSTOP_MS = 2000;

/** Runs of random durations in `durationMs` and random outcomes, drawn from the seed. */
function drawnRuns(sim: Simulator, n: number, durationMs: readonly [number, number]): Runs {
  return createRuns(sim, n, { durationMs, outcome: 'drawn', random: rng.random });
}

/**
 * Env for a child daemon: error-level logs (failed runs are logged at warn), so what a failing
 * test prints is what went wrong in the daemon.
 */
function childEnv(sim: Simulator, extra: Record<string, string | undefined> = {}): Record<string, string> {
  // info: the harness waits for the "running" line, so runs start their clocks only once a
  // daemon is up (on a loaded 2-core machine start-up alone can take seconds).
  return testEnv({ LETTA_BASE_URL: sim.url, WATCHER_LOG_LEVEL: 'info', ...extra });
}

function expectNoFatal(daemons: readonly SpawnedDaemon[]): void {
  for (const d of daemons) expect(d.output(), `daemon ${d.pid}`).not.toMatch(/"level":60|fatal:/);
}

function outputs(daemons: readonly SpawnedDaemon[]): string {
  return daemons.map((d, i) => `--- daemon #${i} (pid ${d.pid}) ---\n${d.output().slice(-4000)}`).join('\n');
}

/** Waits until every run has an event and nothing is left to watch, then reads the stream. */
async function finalEvents(prefix: string, expected: number, daemons: readonly SpawnedDaemon[], timeoutMs = 30_000): Promise<StreamEvent[]> {
  return await settledEvents(redis, prefix, expected, { timeoutMs, describe: () => outputs(daemons) });
}

describe('crash safety of the daemon binary', () => {
  it('kill -9 at random moments, five times, loses no run and duplicates none (300 runs)', async () => {
    const sim = await simulator();
    const env = childEnv(sim, { WATCHER_CONFIG: configFile(shortLease(1000)) });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const k = keys(prefix);
    const runs = new Runs();
    const all: SpawnedDaemon[] = [];
    let daemon = spawnDaemon(env);
    all.push(daemon);

    const KILLS = 5;
    const inFlightAtKill: number[] = [];
    for (let i = 0; i < KILLS; i++) {
      await daemon.ready();
      // Fresh runs every round, so each kill lands while runs are being watched.
      const batch = drawnRuns(sim, 300 / KILLS, [200, 3000]);
      for (const [id, r] of batch) runs.set(id, r);
      await enqueue(redis, prefix, batch.ids);
      // This incarnation is at work: it has committed events since it started.
      const before = (await readEvents(redis, prefix)).length;
      await waitFor(async () => (await readEvents(redis, prefix)).length > before, {
        timeoutMs: 15_000,
        describe: () => outputs(all),
      });
      await sleep(rng.int(0, 600)); // a random moment
      inFlightAtKill.push(await redis.zcard(k.due));
      await daemon.kill9();
      daemon = spawnDaemon(env);
      all.push(daemon);
    }
    expect(inFlightAtKill.every((n) => n > 0), `runs watched at each kill: ${inFlightAtKill.join(', ')}`).toBe(true);

    const events = await finalEvents(prefix, runs.size, all);
    expectExactlyOnce(events, runs.keys(), runs);
    expect(await daemon.stop()).toBe(0);
    expect((await readEvents(redis, prefix)).length).toBe(runs.size);
    expectNoFatal(all);
  });

  it('two replicas on the same prefix, one killed -9 and restarted: exactly one event per run', async () => {
    const sim = await simulator();
    const env = childEnv(sim, { WATCHER_CONFIG: configFile(shortLease(1000)) });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const k = keys(prefix);
    const a = spawnDaemon(env);
    const b = spawnDaemon(env);
    const all = [a, b];
    await Promise.all([a.ready(), b.ready()]);
    const runs = drawnRuns(sim, 200, [200, 3000]);
    await enqueue(redis, prefix, runs.ids);

    await waitForEvents(redis, prefix, 30, { timeoutMs: 15_000, describe: () => outputs(all) });
    await sleep(rng.int(0, 300));
    const watched = await redis.zcard(k.due);
    await a.kill9();
    const a2 = spawnDaemon(env);
    all.push(a2);
    expect(watched).toBeGreaterThan(0);

    const events = await finalEvents(prefix, runs.size, all);
    expectExactlyOnce(events, runs.keys(), runs);
    const codes = await Promise.all([b.stop(), a2.stop()]);
    expect(codes).toEqual([0, 0]);
    expect((await readEvents(redis, prefix)).length).toBe(runs.size);
    expectNoFatal(all);
  });

  it('SIGTERM exits 0 and hands back every unfinished run; a new daemon finishes them', async () => {
    const sim = await simulator();
    // The default lease (60 s): a run that was not handed back would sit out the whole lease.
    const env = childEnv(sim);
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const k = keys(prefix);
    const first = spawnDaemon(env);
    await first.ready();
    const runs = drawnRuns(sim, 120, [300, 4000]);
    await enqueue(redis, prefix, runs.ids);

    await waitForEvents(redis, prefix, 10, { timeoutMs: 15_000, describe: () => outputs([first]) });
    const code = await first.stop();
    expect(code, first.output()).toBe(0);

    // Nothing lost: each run has its event or is still watched (and due now), never both.
    const events = await readEvents(redis, prefix);
    const done = new Set(events.map((e) => e.event.data.run_id));
    const now = await redisNow(redis);
    const problems: string[] = [];
    let unfinished = 0;
    for (const id of runs.keys()) {
      const score = await redis.zscore(k.due, id);
      if (done.has(id)) {
        if (score !== null) problems.push(`${id}: has an event and is still scheduled`);
      } else if (score === null || (await redis.hexists(k.runs, id)) !== 1) {
        problems.push(`${id}: lost (no event, not watched)`);
      } else {
        unfinished++;
        if (Number(score) > now + 1000) problems.push(`${id}: not handed back (due in ${Number(score) - now} ms)`);
      }
    }
    expect(problems).toEqual([]);
    expect(unfinished).toBeGreaterThan(0);
    expect(await redis.llen(k.intake)).toBe(0);

    const second = spawnDaemon(env);
    const all = await finalEvents(prefix, runs.size, [first, second], 20_000);
    expectExactlyOnce(all, runs.keys(), runs);
    expect(await second.stop()).toBe(0);
    expectNoFatal([first, second]);
  });

  it('4 partitions, intake through processing lists: kill -9 during a flood of 3,000 entries loses none and doubles none', async () => {
    const sim = await simulator();
    const partitions = 4;
    // A short blocking wait, so a killed replica's liveness (twice it, plus 2 s) runs out fast.
    const file = configFile({ ...shortLease(1000), intake: { idleMs: 500, batch: 50 } });
    const env = childEnv(sim, { WATCHER_PARTITIONS: String(partitions), WATCHER_CONFIG: file });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const layout = keys(prefix, partitions).layout;
    const runs = drawnRuns(sim, 3000, [0, 300]);
    const ids = runs.ids;
    const daemons = [spawnDaemon(env), spawnDaemon(env)];
    await Promise.all(daemons.map((d) => d.ready()));
    // Push in bursts while killing replicas mid-move, then restarting them.
    for (let round = 0; round < 6; round++) {
      const part = ids.slice(round * 500, (round + 1) * 500);
      for (let i = 0; i < part.length; i += 100) await redis.lpush(layout.intake, ...part.slice(i, i + 100));
      await sleep(rng.int(20, 150));
      const victim = daemons.splice(rng.int(0, daemons.length - 1), 1)[0] as SpawnedDaemon;
      await victim.kill9();
      const next = spawnDaemon(env);
      daemons.push(next);
      await next.ready();
    }
    const events = async () => {
      const all: StreamEvent[] = [];
      for (const p of layout.partitions) for (const [streamId, fields] of await redis.xrange(p.events, '-', '+')) all.push({ streamId, event: JSON.parse(fields[1] ?? '{}') });
      return all;
    };
    const flooded = Date.now();
    await waitFor(async () => (await events()).length >= ids.length, {
      timeoutMs: 90_000,
      intervalMs: 250,
      describe: async () => `${(await events()).length} of ${ids.length} events; intake ${await redis.llen(layout.intake)}\n${outputs(daemons)}`,
    });
    console.log(`partitioned flood: every event ${Date.now() - flooded} ms after the last kill`);
    await sleep(1000);
    expectExactlyOnce(await events(), ids, runs);
    // A killed replica's processing list is adopted once its liveness runs out: nothing stays.
    await waitFor(async () => (await redis.keys(`{${layout.intake}}:processing:*`)).length === 0, {
      timeoutMs: 20_000,
      describe: async () => JSON.stringify(await redis.keys(`{${layout.intake}}:processing:*`)),
    });
    expectExactlyOnce(await events(), ids, runs);
    for (const d of daemons) expect(await d.stop()).toBe(0);
    for (const p of layout.partitions) expect(await redis.llen(p.dead)).toBe(0);
  }, 150_000);

  it('SIGTERM with nothing in flight exits 0 at once: no handle outlives the stop', async () => {
    const sim = await simulator();
    const d = spawnDaemon(childEnv(sim));
    try {
      await d.ready();
      // The intake is in its blocking wait on Redis now; the stop ends it.
      await sleep(300);
      const signalled = Date.now();
      d.child.kill('SIGTERM');
      const { code } = await d.exited;
      const stopMs = Date.now() - signalled;
      console.log(`SIGTERM of an idle daemon: exited after ${stopMs} ms`);
      expect(code, d.output()).toBe(0);
      expect(d.output()).toContain('"to":"stopped"');
      // main.ts exits anyway 2 s after the stop should a handle still be open (a closed Redis
      // client disconnected a second time armed one such timer): well before that.
      expect(stopMs).toBeLessThan(EXIT_BACKSTOP_MS);
    } finally {
      await d.kill9();
    }
  });

  it('SIGTERM while start-up waits for Redis stops it at once, cleanly (exit 0), with no loop started', async () => {
    const sim = await simulator();
    const server = await startRedisServer();
    await server.stop();
    const d = spawnDaemon(childEnv(sim, { REDIS_URL: server.url }));
    try {
      // Modules load in about half a second; then start-up waits for Redis.
      await sleep(1500);
      expect(d.output()).not.toContain('"msg":"letta-run-watcher running"');
      const signalled = Date.now();
      d.child.kill('SIGTERM');
      const { code } = await d.exited;
      const stopMs = Date.now() - signalled;
      expect(code, d.output()).toBe(0);
      // The start-up command that waited on Redis once held the stop for its 10 s timeout and
      // the release as long again. ioredis keeps that command's timeout timer after rejecting
      // it, so here main.ts's exit backstop ends the process: 2 s, not 20.
      console.log(`SIGTERM during start-up without Redis: exited after ${stopMs} ms`);
      expect(stopMs).toBeLessThan(EXIT_BACKSTOP_MS + 1000);
      // Stopped before it ran: nothing was started that could outlive the stop.
      expect(d.output()).toContain('"to":"stopped"');
      expect(d.output()).not.toContain('"to":"running"');
    } finally {
      await d.kill9();
      await server.destroy();
    }
  });
});
