import { randomUUID } from 'node:crypto';
import { partitionIndex } from '../redis/keys.ts';
import type { RedisClient } from '../redis/scripts.ts';
import { num, partition, type StoreContext } from '../redis/context.ts';

/**
 * Moving entries from P:intake into the watch state. With one partition the intake list is in
 * the partition's slot and one script (lua/intake.lua, mode 'list') moves a batch atomically.
 * With N > 1 the move takes three steps, the reliable-queue pattern: intake-take.lua moves a
 * batch into this replica's processing list (in the intake's slot); each entry is applied to
 * its partition by intake.lua in mode 'args', which remembers the move ids it applied; and
 * intake-done.lua drops the batch. A replica that dies between the steps leaves its processing
 * list behind with its batch id; another replica adopts it once the dead one's liveness runs
 * out and applies it again, and the remembered move ids keep that from applying anything twice.
 */
export interface IntakeLimits {
  /** Most entries per call. */
  batch: number;
  /** About the most bytes per call: the entry that crosses it is the last. */
  batchBytes: number;
  maxEntryBytes: number;
  defaultMaxWatchMs: number;
  maxWatchCapMs: number;
  /** Deepest JSON nesting an entry may have. */
  maxDepth: number;
  maxTargetsPerRun: number;
}

export interface IntakeTiming {
  /**
   * How long a replica's processing list stays its own without a sign of life (N > 1). A
   * replica shows life at every take(), at least once per blocking wait, so this must exceed
   * the longest blocking wait.
   */
  livenessMs: number;
}

export interface IntakeResult {
  taken: number;
  accepted: number;
  duplicates: number;
  rejected: number;
  /**
   * A partition that could not take its entries (N > 1): the others did, and the batch stays in
   * this replica's processing list to be tried again.
   */
  failure?: unknown;
}

export interface IntakeStore {
  /** Moves one batch; `taken` is 0 when there was nothing to move. */
  take(): Promise<IntakeResult>;
  /**
   * Waits on `blocking` (a connection of its own: the wait holds it) until the intake list
   * has an entry or `timeoutMs` pass; true when there is one.
   */
  waitForEntries(blocking: RedisClient, timeoutMs: number): Promise<boolean>;
  /**
   * The idle turn (N > 1; a no-op with one partition): shows this replica alive, and adopts the
   * processing list of a replica whose liveness ran out.
   */
  heartbeat(): Promise<IntakeResult | undefined>;
  /** The intake rules without the daemon: '' per valid entry, else why it would be dead-lettered. */
  check(entries: readonly string[]): Promise<string[]>;
  /**
   * On a clean stop (N > 1): finishes a batch still in this replica's processing list (a
   * blocking wait may have just moved an entry there) and leaves the replica set.
   */
  leave(): Promise<void>;
}

/** How often to look for processing lists left by dead replicas. */
const ORPHAN_CHECK_MS = 2_000;
/** How long a partition remembers the move ids it applied: far past any takeover. */
const MOVED_KEEP_MS = 15 * 60_000;

/** The limits as the intake scripts take them (ARGV after the mode's own). */
export function limitArgs(limits: IntakeLimits): number[] {
  return [limits.maxEntryBytes, limits.defaultMaxWatchMs, limits.maxWatchCapMs, limits.maxDepth, limits.maxTargetsPerRun];
}

/**
 * The run ID an entry names, to route it (N > 1); intake.lua re-reads it and refuses an entry
 * that reads differently there. An entry with no readable ID goes to partition 0 to be
 * dead-lettered.
 */
export function routeOf(raw: string): string {
  const s = raw.trim();
  if (!s.startsWith('{')) return s;
  try {
    const id = (JSON.parse(s) as { run_id?: unknown }).run_id;
    return typeof id === 'string' ? id : '';
  } catch {
    return '';
  }
}

export function makeIntakeStore(ctx: StoreContext, limits: IntakeLimits, timing: IntakeTiming = { livenessMs: 15_000 }): IntakeStore {
  const { layout, scripts, replica } = ctx;
  const n = layout.partitions.length;
  const nowIso = () => new Date().toISOString();
  let lastOrphanCheck = -Infinity;

  function applyArgs(index: number, pairs: readonly string[]): Promise<unknown> {
    const p = partition(ctx, index);
    return scripts.run('intake', [p.due, p.due, p.runs, p.entries, p.dead, p.moved], [
      'args', pairs.length / 2, Number.MAX_SAFE_INTEGER, ...limitArgs(limits), nowIso(), MOVED_KEEP_MS, index, n, ...pairs,
    ]);
  }

  async function orphan(): Promise<string> {
    if (performance.now() - lastOrphanCheck < ORPHAN_CHECK_MS) return '';
    lastOrphanCheck = performance.now();
    const [time] = await ctx.client.time();
    const expired = await ctx.client.zrangebyscore(layout.intakeReplicas, '-inf', Number(time) * 1000, 'LIMIT', 0, 2);
    return expired.find((r) => r !== replica) ?? '';
  }

  async function takePartitioned(): Promise<IntakeResult> {
    const other = await orphan();
    const r = (await scripts.run(
      'intake-take',
      [
        layout.intake, layout.intakeProcessing(replica), layout.intakeBatch(replica), layout.intakeReplicas,
        other === '' ? layout.intakeProcessing(replica) : layout.intakeProcessing(other),
        other === '' ? layout.intakeBatch(replica) : layout.intakeBatch(other),
      ],
      [replica, timing.livenessMs, limits.batch, limits.batchBytes, randomUUID(), other],
    )) as string[];
    const [batch = '', ...entries] = r;
    const total: IntakeResult = { taken: entries.length, accepted: 0, duplicates: 0, rejected: 0 };
    if (batch === '' || entries.length === 0) return total;
    const byPartition = new Map<number, string[]>();
    entries.forEach((raw, i) => {
      const index = partitionIndex(routeOf(raw), n);
      let pairs = byPartition.get(index);
      if (!pairs) byPartition.set(index, (pairs = []));
      pairs.push(`${batch}:${i}`, raw);
    });
    const results = await Promise.allSettled([...byPartition].map(([index, pairs]) => applyArgs(index, pairs) as Promise<number[]>));
    for (const r of results) {
      if (r.status === 'rejected') {
        total.failure ??= r.reason;
        continue;
      }
      const [, accepted, duplicates, rejected] = r.value;
      total.accepted += num(accepted);
      total.duplicates += num(duplicates);
      total.rejected += num(rejected);
    }
    if (total.failure === undefined) await scripts.run('intake-done', [layout.intakeProcessing(replica), layout.intakeBatch(replica)], [batch]);
    return total;
  }

  return {
    async take() {
      if (n > 1) return await takePartitioned();
      const p = partition(ctx, 0);
      const r = (await scripts.run('intake', [layout.intake, p.due, p.runs, p.entries, p.dead, p.moved], [
        'list', limits.batch, limits.batchBytes, ...limitArgs(limits), nowIso(), MOVED_KEEP_MS, 0, 1,
      ])) as number[];
      return { taken: num(r[0]), accepted: num(r[1]), duplicates: num(r[2]), rejected: num(r[3]) };
    },
    async waitForEntries(blocking, timeoutMs) {
      const seconds = Math.max(0.01, timeoutMs / 1000);
      // One partition: pop the oldest entry and push it straight back where it was (a no-op
      // that blocks until there is one). N > 1: move it into the processing list, where
      // intake-take.lua finds it.
      const got =
        n > 1
          ? await blocking.blmove(layout.intake, layout.intakeProcessing(replica), 'RIGHT', 'LEFT', seconds)
          : await blocking.blmove(layout.intake, layout.intake, 'RIGHT', 'RIGHT', seconds);
      return got !== null;
    },
    async heartbeat() {
      if (n === 1) return undefined;
      // The idle turn: adopt a dead replica's processing list if there is one (take does),
      // else just show life.
      if ((await orphan()) !== '') {
        lastOrphanCheck = -Infinity;
        return await takePartitioned();
      }
      const [time] = await ctx.client.time();
      await ctx.client.zadd(layout.intakeReplicas, Number(time) * 1000 + timing.livenessMs, replica);
      return undefined;
    },
    async check(entries) {
      if (entries.length === 0) return [];
      return (await scripts.run('check-entries', [], [...limitArgs(limits), ...entries])) as string[];
    },
    async leave() {
      if (n === 1) return;
      if ((await ctx.client.llen(layout.intakeProcessing(replica))) > 0) await takePartitioned();
      if ((await ctx.client.llen(layout.intakeProcessing(replica))) === 0) await ctx.client.zrem(layout.intakeReplicas, replica);
    },
  };
}
