import { num, partition, type StoreContext } from '../redis/context.ts';

/**
 * The watch state of runs, through named operations on lua/claim.lua, settle.lua and
 * renew.lua. A claim leases due runs; the counter it returns is the fence every later op of
 * that claim must carry (see claim.lua).
 */
export interface RunClaim {
  runId: string;
  partition: number;
  /** The claim counter: the fence. */
  counter: string;
  enqueuedAt: number;
  deadline: number;
  /** Polls made before this claim. */
  polls: number;
  /** The run's created_at (ms) once a poll has seen it. */
  createdAt: number | undefined;
  /** When the run was reported stalled (run.stalled), if it was. */
  stalledAt: number | undefined;
}

export interface ClaimBatch {
  /** Redis time of the claim. */
  now: number;
  /** Earliest score left in the partition (a due time or a lease end), undefined when empty. */
  nextDue: number | undefined;
  claims: RunClaim[];
}

export type RunSettle =
  /** `polled`: a request was made for this claim (else its counted poll is given back). */
  | { kind: 'reschedule'; runId: string; counter: string; delayMs: number; polled: boolean; createdAt?: number | undefined }
  /** Appends the event, records a delivery per target (configured ones given here, per-run ones stored), drops the run. */
  | { kind: 'commit'; runId: string; counter: string; eventJson: string; eventId: string; targets: readonly string[] }
  /** Appends the run.stalled event, records its deliveries (configured targets), flags the run and reschedules it. */
  | { kind: 'stall'; runId: string; counter: string; eventJson: string; eventId: string; targets: readonly string[]; delayMs: number }
  | { kind: 'dead-letter'; runId: string; counter: string; deadLetterJson: string };

export interface RunStore {
  claim(partition: number, limit: number, leaseMs: number): Promise<ClaimBatch>;
  /** Applies many ops of one partition in one call; true per op that held its lease. */
  settle(partition: number, ops: readonly RunSettle[], firstDeliveryMs: number): Promise<boolean[]>;
  /** Extends the leases of runs still in flight; true per run still ours. */
  renew(partition: number, runs: readonly { runId: string; counter: string }[], leaseMs: number): Promise<boolean[]>;
  /** The raw JSON intake entry of a watched run (null for a bare ID). */
  entryOf(partition: number, runId: string): Promise<string | null>;
  /**
   * Reconciles a partition with a page of active runs (lua/reconcile.lua): `listed` are the
   * page's runs in this partition, `oldestMs` the page's oldest created_at when it was full.
   */
  reconcile(partition: number, listed: readonly string[], oldestMs: number | undefined, safetyGapMs: number): Promise<{ dueNow: number; pushed: number }>;
  /** A hint that a run may have ended: due now if watched. Its partition, and whether it is watched. */
  hint(runId: string): Promise<{ partition: number; watched: boolean }>;
}

/** The one-letter op codes of settle.lua. */
const SETTLE_CODES = { reschedule: 'R', commit: 'C', stall: 'T', 'dead-letter': 'D' } as const;
/** In a run record "e:d:p:c:...", the claim counter is the fourth field (renew.lua). */
const RUN_COUNTER_FIELD = 4;

export interface Durability {
  /** Replicas that must have a commit before its deliveries go out (WAIT); 0 = do not wait. */
  waitReplicas: number;
  waitTimeoutMs: number;
  /** Makes the deliveries a confirmed commit held back due now. */
  release(partition: number, members: readonly string[]): Promise<unknown>;
  /** A commit WAIT did not confirm in time: its deliveries go when their hold ends. */
  unconfirmed(replicas: number): void;
}

/**
 * With `durability.waitReplicas` > 0 a settle that commits is followed by WAIT on the same
 * connection (one pipeline, so Cluster sends both to the partition's master), and the new
 * deliveries, recorded with a hold, are released once enough replicas have the commit.
 */
export function makeRunStore(ctx: StoreContext, durability?: Durability): RunStore {
  let claims = 0;
  return {
    async claim(index, limit, leaseMs) {
      const p = partition(ctx, index);
      const claimId = String(++claims);
      const r = (await ctx.scripts.run('claim', [p.due, p.runs, p.lastClaim('poll', ctx.replica), p.dead], [
        limit, leaseMs, claimId, new Date().toISOString(),
      ])) as unknown[];
      const out: RunClaim[] = [];
      for (let i = 2; i + 6 < r.length; i += 7) {
        const created = String(r[i + 5] ?? '');
        const stalled = String(r[i + 6] ?? '');
        out.push({
          runId: String(r[i]),
          partition: index,
          counter: String(r[i + 1]),
          enqueuedAt: num(r[i + 2]),
          deadline: num(r[i + 3]),
          polls: num(r[i + 4]),
          createdAt: created === '' ? undefined : Number(created),
          stalledAt: stalled === '' ? undefined : Number(stalled),
        });
      }
      const next = num(r[1]);
      return { now: num(r[0]), nextDue: next >= 0 ? next : undefined, claims: out };
    },
    async settle(index, ops, firstDeliveryMs) {
      if (ops.length === 0) return [];
      const p = partition(ctx, index);
      const args: (string | number)[] = [firstDeliveryMs];
      for (const op of ops) {
        const code = SETTLE_CODES[op.kind];
        if (op.kind === 'reschedule') args.push(code, op.runId, op.counter, Math.max(0, Math.round(op.delayMs)), op.polled ? '1' : '0', op.createdAt ?? '', '');
        else if (op.kind === 'commit') args.push(code, op.runId, op.counter, op.eventJson, op.eventId, op.targets.join('\n'), '');
        else if (op.kind === 'stall') args.push(code, op.runId, op.counter, op.eventJson, op.eventId, op.targets.join('\n'), Math.max(0, Math.round(op.delayMs)));
        else args.push(code, op.runId, op.counter, op.deadLetterJson, '', '', '');
      }
      const keys = [p.due, p.runs, p.entries, p.events, p.webhooks, p.attempts, p.payloads, p.dead, p.created];
      const commits = ops.some((op) => op.kind === 'commit' || op.kind === 'stall');
      if (!durability || durability.waitReplicas === 0 || !commits) {
        const [results] = (await ctx.scripts.run('settle', keys, args)) as [number[], string[]];
        return results.map((v) => v === 1);
      }
      const [[scriptErr, reply], [waitErr, acked]] = (await ctx.scripts.pipeline([['settle', keys, args]]).wait(durability.waitReplicas, durability.waitTimeoutMs).exec()) as [
        [Error | null, [number[], string[]]],
        [Error | null, number],
      ];
      if (scriptErr) throw scriptErr;
      const [results, recorded] = reply;
      if (!waitErr && acked >= durability.waitReplicas) await durability.release(index, recorded);
      else durability.unconfirmed(waitErr ? 0 : acked);
      return results.map((v) => v === 1);
    },
    async renew(index, runs, leaseMs) {
      if (runs.length === 0) return [];
      const p = partition(ctx, index);
      const args: (string | number)[] = [leaseMs, RUN_COUNTER_FIELD];
      for (const run of runs) args.push(run.runId, run.counter);
      const r = (await ctx.scripts.run('renew', [p.due, p.runs], args)) as number[];
      return r.map((v) => v === 1);
    },
    async entryOf(index, runId) {
      return await ctx.client.hget(partition(ctx, index).entries, runId);
    },
    async reconcile(index, listed, oldestMs, safetyGapMs) {
      const p = partition(ctx, index);
      const r = (await ctx.scripts.run('reconcile', [p.due, p.runs, p.created], [oldestMs === undefined ? '-inf' : Math.floor(oldestMs), safetyGapMs, ...listed])) as unknown[];
      return { dueNow: num(r[0]), pushed: num(r[1]) };
    },
    async hint(runId) {
      const p = ctx.layout.partitionOf(runId);
      return { partition: p.index, watched: num(await ctx.scripts.run('hint', [p.due, p.runs], [runId])) === 1 };
    },
  };
}
