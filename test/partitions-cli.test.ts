import { describe, expect, it } from 'vitest';
import { layoutFor, partitionIndex } from '../src/redis/keys.ts';
import { runCli, startDaemon, testConfig, testEnv, useSuite, waitFor } from './kit/harness.ts';

/**
 * With N partitions the CLI covers every partition: `status --json` lists each events stream
 * (under event_streams), and `dead list|replay|purge` see every partition's dead letters.
 */
const { redis, cleanup, simulator } = useSuite();

describe('the CLI over partitions', () => {
  it('status lists the event streams (P:events alone with one partition) and sums every partition', async () => {
    const one = testEnv();
    const r1 = await runCli(['status', '--json'], one);
    expect(r1.code, r1.out).toBe(0);
    expect(JSON.parse(r1.stdout)).toMatchObject({ partitions: 1, event_streams: [`${one['WATCHER_KEY_PREFIX']}:events`] });

    const sim = await simulator();
    const env = testEnv({ WATCHER_PARTITIONS: '3', LETTA_BASE_URL: sim.url });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const layout = layoutFor(prefix, 3);
    const runs = Array.from({ length: 30 }, () => sim.createRun({ durationMs: 0, outcome: 'completed' }).id);
    await redis.lpush(layout.intake, ...runs);
    await startDaemon(cleanup, testConfig(env));
    await waitFor(async () => (await Promise.all(layout.partitions.map((p) => redis.xlen(p.events)))).reduce((a, b) => a + b, 0) === 30);
    const s = JSON.parse((await runCli(['status', '--json'], env)).stdout) as { partitions: number; event_streams: string[]; events: number; watched: number };
    expect(s.partitions).toBe(3);
    expect(s.event_streams).toEqual(layout.partitions.map((p) => p.events));
    expect(s.events).toBe(30);
    // Each stream holds the events of its partition's runs.
    for (const p of layout.partitions) {
      const ids = (await redis.xrange(p.events, '-', '+')).map(([, f]) => (JSON.parse(f[1] ?? '{}') as { data: { run_id: string } }).data.run_id);
      for (const id of ids) expect(partitionIndex(id, 3)).toBe(p.index);
    }
  });

  it('dead list, replay and purge cover every partition', async () => {
    const env = testEnv({ WATCHER_PARTITIONS: '3' });
    const prefix = env['WATCHER_KEY_PREFIX'] ?? '';
    const layout = layoutFor(prefix, 3);
    // Letters in every partition, as the daemon writes them. The entries are refused at intake
    // (a slash): the one in partition 1 is routed to partition 1 itself, the one in
    // partition 2 to another partition.
    const entryRoutedTo = (want: (p: number) => boolean) => {
      for (let i = 0; ; i++) if (want(partitionIndex(`x/y${i}`, 3))) return `x/y${i}`;
    };
    const entries = ['x/y', entryRoutedTo((p) => p === 1), entryRoutedTo((p) => p !== 2)];
    for (const p of layout.partitions) {
      await redis.lpush(p.dead, JSON.stringify({ kind: 'intake', reason: `bad entry in ${p.index}`, at: '2026-11-28T00:00:00.000Z', entry: entries[p.index] }));
    }
    const list = await runCli(['dead', 'list', '--json'], env);
    const letters = JSON.parse(list.stdout) as { partition: number; index: number; reason: string }[];
    expect(letters.map((l) => [l.partition, l.index])).toEqual([[0, 0], [1, 1], [2, 2]]);
    const replay = await runCli(['dead', 'replay', '--index', '1', '--index', '2'], env);
    expect(replay.stdout, replay.out).toContain('replayed 2 dead letters');
    // Replayed in its own partition, partition 1's entry is refused again there (a new letter);
    // partition 2's, whose run belongs to another partition, goes back on the intake list.
    expect(await redis.lrange(layout.intake, 0, -1)).toEqual([entries[2]]);
    expect(await redis.llen(layout.partitions[1]!.dead)).toBe(1);
    expect(await redis.llen(layout.partitions[2]!.dead)).toBe(0);
    const purge = await runCli(['dead', 'purge', '--all'], env);
    expect(purge.stdout, purge.out).toContain('purged 2 dead letters');
    for (const p of layout.partitions) expect(await redis.llen(p.dead)).toBe(0);
  });
});
