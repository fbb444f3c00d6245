import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';

/**
 * The loop shared by polling and webhook delivery: claim leased work from Redis in batches,
 * run each item under p-queue's concurrency (and optional rate) limit, renew the leases of
 * items still held, and on stop hand back what has not run while letting what runs finish
 * within a grace period. Work items live in Redis the whole time; this loop holds only leases.
 */
export interface WorkLoopOptions<T> {
  name: string;
  concurrency: number;
  /** Requests per second across the loop; 0 = no limit. */
  maxRps?: number;
  claimBatch: number;
  clock: Clock;
  log: Logger;
  /** Claims up to `limit` items; `idleMs` is how long to wait when fewer came back. */
  claim(limit: number): Promise<{ items: T[]; idleMs: number }>;
  /** Runs one item; `signal` aborts when the shutdown grace runs out. */
  process(item: T, signal: AbortSignal): Promise<void>;
  /** Returns an item that never ran (stopping) so another worker can take it at once. */
  handBack(item: T): Promise<void>;
  /** Caps a claim below the free room (e.g. one probe at a time while paused); default: no cap. */
  claimLimit?(free: number, held: number): { limit: number; waitMs: number };
  /** Extends the leases of items held for a while; called every `renewEveryMs`. */
  renew?(items: T[]): Promise<void>;
  renewEveryMs?: number;
  /** A failed claim (for the Redis health report); the loop waits and tries again. */
  onClaimError?(err: unknown): void;
  /** A claim that worked (the problem reported by onClaimError is over). */
  onClaimOk?(): void;
}

export interface WorkLoop {
  start(): void;
  wake(): void;
  stop(graceMs: number): Promise<void>;
  /** Clock time of the loop's last turn (liveness). */
  readonly lastBeat: number;
}

/** The longest the loop sleeps without a claim (it also wakes on work, see wake()). */
const IDLE_WAIT_MS = 10_000;
/** While the local backlog is full, how often to look again (items finishing wake it). */
const BACKLOG_WAIT_MS = 1_000;
const WOKEN = Object.freeze({ woken: true });
const CLAIM_RETRY_MAX_MS = 5_000;
/** A failed claim is retried after this, doubling with each failure in a row (up to the cap). */
const CLAIM_RETRY_BASE_MS = 100;
const CLAIM_RETRY_DOUBLINGS = 6;
/** How often a partition that held nothing at its last claim is looked at again. */
const EMPTY_REFRESH_MS = 20_000;
/** How soon a partition whose claim failed is tried again while the others go on. */
const PARTITION_RETRY_MS = 1_000;

interface Held<T> {
  item: T;
  started: boolean;
  heldSince: number;
  done: Promise<void>;
}

export function makeWorkLoop<T>(options: WorkLoopOptions<T>): WorkLoop {
  const rps = options.maxRps ?? 0;
  const queue = new PQueue({
    concurrency: options.concurrency,
    ...(rps > 0
      ? rps >= 1
        ? { intervalCap: Math.floor(rps), interval: 1000, strict: true }
        : { intervalCap: 1, interval: Math.round(1000 / rps), strict: true }
      : {}),
  });
  // Twice the concurrency: work never waits on a claim round trip, and the leases held in
  // the local backlog stay few.
  const capacity = options.concurrency * 2;
  const held = new Set<Held<T>>();
  const stopping = new AbortController();
  // One signal for all running work: it aborts when the shutdown grace runs out.
  const graceOver = new AbortController();
  let loopDone: Promise<void> | undefined;
  let renewTimer: NodeJS.Timeout | undefined;
  let wakeUp: (() => void) | undefined;
  /** A wake() that came while the loop was not asleep (claiming): the next idle() skips its sleep. */
  let woken = false;
  let lastBeat = options.clock.now();

  function wake(): void {
    if (wakeUp) wakeUp();
    else woken = true;
  }

  /**
   * Sleeps until `ms` pass or wake() is called (stop() calls it too). The abort reason is a
   * constant: wake() runs after every settle, and a default AbortError would capture a stack
   * trace each time.
   */
  async function idle(ms: number): Promise<void> {
    if (stopping.signal.aborted) return;
    if (woken) {
      woken = false;
      return;
    }
    const ctl = new AbortController();
    wakeUp = () => {
      wakeUp = undefined;
      ctl.abort(WOKEN);
    };
    try {
      await options.clock.sleep(Math.max(1, ms), ctl.signal);
    } catch {
      // woken or stopping
    } finally {
      wakeUp = undefined;
    }
  }

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stopping.signal.aborted) {
      lastBeat = options.clock.now();
      // Claim in batches: wait until the local backlog is down to what is running.
      if (held.size > options.concurrency) {
        await idle(BACKLOG_WAIT_MS);
        continue;
      }
      const free = Math.min(capacity - held.size, options.claimBatch);
      const { limit, waitMs } = options.claimLimit?.(free, held.size) ?? { limit: free, waitMs: 0 };
      if (limit <= 0) {
        await idle(Math.min(IDLE_WAIT_MS, waitMs));
        continue;
      }
      let claimed;
      try {
        claimed = await options.claim(limit);
        if (failures > 0) options.onClaimOk?.();
        failures = 0;
      } catch (err) {
        failures++;
        options.onClaimError?.(err);
        await idle(Math.min(CLAIM_RETRY_MAX_MS, CLAIM_RETRY_BASE_MS * 2 ** Math.min(failures, CLAIM_RETRY_DOUBLINGS)));
        continue;
      }
      for (const item of claimed.items) start(item);
      if (claimed.items.length < limit) await idle(Math.min(IDLE_WAIT_MS, claimed.idleMs));
      else if (waitMs > 0) await idle(waitMs);
    }
  }

  function start(item: T): void {
    const h: Held<T> = { item, started: false, heldSince: options.clock.now(), done: Promise.resolve() };
    held.add(h);
    h.done = run(h);
  }

  /** One promise per item on the hot path: the queue's, awaited here. */
  async function run(h: Held<T>): Promise<void> {
    try {
      await queue.add(() => {
        h.started = true;
        return options.process(h.item, graceOver.signal);
      });
    } catch (err) {
      if (h.started) {
        options.log.error({ err }, `${options.name}: task failed; the item comes due again when its lease ends`);
      } else {
        // Never started: removed from the queue by stop() (queue.clear()), so give it back.
        await options.handBack(h.item).catch((e: unknown) => {
          options.log.warn({ err: e }, `${options.name}: could not hand back an item; it comes due when its lease ends`);
        });
      }
    } finally {
      held.delete(h);
      if (held.size <= options.concurrency) wake();
    }
  }

  /** Renews what has been held for a renewal period: fast work never costs a renewal. */
  function renewHeld(): void {
    const everyMs = options.renewEveryMs ?? 0;
    const cutoff = options.clock.now() - everyMs;
    const old = [...held].filter((h) => h.heldSince <= cutoff).map((h) => h.item);
    if (old.length === 0 || !options.renew) return;
    options.renew(old).catch((err: unknown) => options.log.warn({ err }, `${options.name}: could not renew leases; they may run out and the work be done twice`));
  }

  return {
    start() {
      loopDone ??= loop();
      if (options.renew && options.renewEveryMs && !renewTimer) {
        renewTimer = setInterval(renewHeld, options.renewEveryMs);
        renewTimer.unref();
      }
    },
    wake,
    async stop(graceMs) {
      stopping.abort();
      wake();
      await loopDone;
      // Not started yet: take them out of the queue, which hands them back.
      queue.clear();
      const all = () => Promise.all([...held].map((h) => h.done));
      const timerDone = new AbortController();
      const timer = options.clock.sleep(graceMs, timerDone.signal).then(
        () => 'timeout' as const,
        () => 'done' as const,
      );
      const first = await Promise.race([all().then(() => 'done' as const), timer]);
      timerDone.abort();
      if (first === 'timeout' && held.size > 0) {
        options.log.warn({ in_flight: held.size }, `${options.name}: shutdown grace ran out; handing back unfinished work`);
        graceOver.abort();
        await all();
      }
      clearInterval(renewTimer);
    },
    get lastBeat() {
      return lastBeat;
    },
  };
}

/**
 * Claims across partitions, fairly: each call starts one partition further along, and skips a
 * partition whose earliest due time (learnt from its last claim) is still ahead and was learnt
 * recently, so an idle replica with N partitions does not cost Redis N claims per wake.
 */
export interface PartitionClaims<T> {
  claim(limit: number): Promise<{ items: T[]; idleMs: number }>;
  /** Forget what is known of due times (new work arrived): claim everywhere next time. */
  invalidate(): void;
  /** Something in `partition` comes due in `inMs` (we just rescheduled it). */
  dueIn(partition: number, inMs: number): void;
  /** False when every partition was empty at its last claim. */
  readonly watching: boolean;
}

export function claimAcrossPartitions<T>(options: {
  partitions: number;
  clock: Clock;
  /** Claims from one partition; `nextDue` and `now` are on Redis's clock. */
  claimOne(partition: number, limit: number): Promise<{ items: T[]; now: number; nextDue: number | undefined }>;
  /** A partition whose claim failed (a wrong-typed key, its master down): the others go on. */
  onPartitionError?(partition: number, err: unknown): void;
  /** A partition whose last claim had failed worked again. */
  onPartitionOk?(partition: number): void;
}): PartitionClaims<T> {
  const failing = new Set<number>();
  /** Local clock time at which each partition is worth a claim. */
  const dueAt = new Array<number>(options.partitions).fill(0);
  /** The earliest due time heard of (dueIn, invalidate) while a partition's claim was in flight. */
  const heard = new Array<number>(options.partitions).fill(Infinity);
  /** Whether each partition held anything (due or leased) at its last claim. */
  const holds = new Array<boolean>(options.partitions).fill(true);
  let next = 0;
  return {
    async claim(limit) {
      const items: T[] = [];
      const start = next;
      next = (next + 1) % options.partitions;
      let tried = 0;
      const failed: unknown[] = [];
      for (let k = 0; k < options.partitions && items.length < limit; k++) {
        const p = (start + k) % options.partitions;
        if (dueAt[p]! > options.clock.now()) continue;
        const want = limit - items.length;
        heard[p] = Infinity;
        tried++;
        let r;
        try {
          r = await options.claimOne(p, want);
        } catch (err) {
          // One broken partition must not stop the others: try it again a little later.
          failed.push(err);
          failing.add(p);
          options.onPartitionError?.(p, err);
          dueAt[p] = options.clock.now() + PARTITION_RETRY_MS;
          continue;
        }
        if (failing.delete(p)) options.onPartitionOk?.(p);
        holds[p] = r.nextDue !== undefined || r.items.length > 0;
        items.push(...r.items);
        const local = options.clock.now();
        // An empty partition is looked at less often: new work there wakes this replica when it
        // is its own intake, and is claimed by the replica that took it in otherwise.
        const wait = r.nextDue === undefined ? EMPTY_REFRESH_MS : Math.min(IDLE_WAIT_MS, Math.max(0, r.nextDue - r.now));
        // A full claim may have left more due: come back at once. What was heard meanwhile
        // (new intake, a reschedule) is newer than this claim's answer.
        dueAt[p] = Math.min(r.items.length >= want ? local : local + wait, heard[p] ?? Infinity);
      }
      // Every partition tried failed: the loop's own back-off takes over.
      if (tried > 0 && failed.length === tried) throw failed[0];
      const soonest = Math.min(...dueAt) - options.clock.now();
      return { items, idleMs: Math.max(5, soonest) };
    },
    invalidate() {
      dueAt.fill(0);
      heard.fill(0);
    },
    get watching() {
      return holds.some(Boolean);
    },
    dueIn(partition, inMs) {
      const at = options.clock.now() + inMs;
      dueAt[partition] = Math.min(dueAt[partition] ?? 0, at);
      heard[partition] = Math.min(heard[partition] ?? Infinity, at);
    },
  };
}
