import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Clock } from './clock.ts';

/**
 * The loop shared by polling and webhook delivery: claim leased work from Redis in batches,
 * run each item under p-queue's concurrency (and optional rate) limit, and on stop hand back
 * what has not run while letting what runs finish within a grace period. Work items live in
 * Redis the whole time; this loop holds only leases.
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
}

export interface WorkLoop {
  start(): void;
  wake(): void;
  stop(graceMs: number): Promise<void>;
  readonly held: number;
  /** Clock time of the loop's last turn (liveness). */
  readonly lastBeat: number;
}

const IDLE_WAIT_MS = 1000;
const WOKEN = Object.freeze({ woken: true });

interface Held<T> {
  item: T;
  started: boolean;
  done: Promise<void>;
}

export function makeWorkLoop<T>(o: WorkLoopOptions<T>): WorkLoop {
  const rps = o.maxRps ?? 0;
  const queue = new PQueue({
    concurrency: o.concurrency,
    ...(rps > 0
      ? rps >= 1
        ? { intervalCap: Math.floor(rps), interval: 1000, strict: true }
        : { intervalCap: 1, interval: Math.round(1000 / rps), strict: true }
      : {}),
  });
  // Twice the concurrency: work never waits on a claim round trip, and the leases held in
  // the local backlog stay few.
  const capacity = o.concurrency * 2;
  const held = new Set<Held<T>>();
  const stopping = new AbortController();
  // One signal for all running work: it aborts when the shutdown grace runs out.
  const graceOver = new AbortController();
  let loopDone: Promise<void> | undefined;
  let wakeUp: (() => void) | undefined;
  let lastBeat = o.clock.now();

  function wake(): void {
    wakeUp?.();
  }

  /**
   * Sleeps until `ms` pass or wake() is called (stop() calls it too). The abort reason is a
   * constant: wake() runs after every settle, and a default AbortError would capture a stack
   * trace each time.
   */
  async function idle(ms: number): Promise<void> {
    if (stopping.signal.aborted) return;
    const ctl = new AbortController();
    wakeUp = () => {
      wakeUp = undefined;
      ctl.abort(WOKEN);
    };
    try {
      await o.clock.sleep(Math.max(1, ms), ctl.signal);
    } catch {
      // woken or stopping
    } finally {
      wakeUp = undefined;
    }
  }

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stopping.signal.aborted) {
      lastBeat = o.clock.now();
      // Claim in batches: wait until the local backlog is down to what is running.
      if (held.size > o.concurrency) {
        await idle(IDLE_WAIT_MS);
        continue;
      }
      const free = Math.min(capacity - held.size, o.claimBatch);
      const { limit, waitMs } = o.claimLimit?.(free, held.size) ?? { limit: free, waitMs: 0 };
      if (limit <= 0) {
        await idle(Math.min(IDLE_WAIT_MS, waitMs));
        continue;
      }
      let claimed;
      try {
        claimed = await o.claim(limit);
        failures = 0;
      } catch (err) {
        failures++;
        if (failures === 1 || failures % 30 === 0) o.log.error({ err }, `cannot claim ${o.name} from Redis; retrying`);
        await idle(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
        continue;
      }
      for (const item of claimed.items) start(item);
      if (claimed.items.length < limit) await idle(Math.min(IDLE_WAIT_MS, claimed.idleMs));
      else if (waitMs > 0) await idle(waitMs);
    }
  }

  function start(item: T): void {
    const h: Held<T> = { item, started: false, done: Promise.resolve() };
    held.add(h);
    h.done = run(h);
  }

  /** One promise per item on the hot path: the queue's, awaited here. */
  async function run(h: Held<T>): Promise<void> {
    try {
      await queue.add(() => {
        h.started = true;
        return o.process(h.item, graceOver.signal);
      });
    } catch (err) {
      if (h.started) {
        o.log.error({ err }, `${o.name}: task failed; the item comes due again when its lease ends`);
      } else {
        // Never started: removed from the queue by stop() (queue.clear()), so give it back.
        await o.handBack(h.item).catch((e: unknown) => {
          o.log.warn({ err: e }, `${o.name}: could not hand back an item; it comes due when its lease ends`);
        });
      }
    } finally {
      held.delete(h);
      if (held.size <= o.concurrency) wake();
    }
  }

  return {
    start() {
      loopDone ??= loop();
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
      const timer = o.clock.sleep(graceMs, timerDone.signal).then(
        () => 'timeout' as const,
        () => 'done' as const,
      );
      const first = await Promise.race([all().then(() => 'done' as const), timer]);
      timerDone.abort();
      if (first === 'timeout' && held.size > 0) {
        o.log.warn({ in_flight: held.size }, `${o.name}: shutdown grace ran out; handing back unfinished work`);
        graceOver.abort();
        await all();
      }
    },
    get held() {
      return held.size;
    },
    get lastBeat() {
      return lastBeat;
    },
  };
}
