/**
 * Coalesces many small Redis writes into one round trip: items added in the same tick (or
 * while a flush is in flight) go out together, at most `maxBatch` at a time. This is what
 * keeps the poll path near one Redis round trip per batch of polls rather than per poll.
 *
 * `minGapMs` caps the flush rate: a flush starts at once when the last one started at least
 * that long ago (a quiet daemon adds no delay), else when the gap is up, carrying everything
 * added meanwhile. Under load that trades a few milliseconds for far fewer round trips, and
 * each round trip (a write that wakes Redis) costs the daemon more than encoding its items.
 */
export interface Batcher<I, O> {
  add(item: I): Promise<O>;
  /** Resolves when everything added so far has been flushed. */
  drain(): Promise<void>;
}

export interface BatcherOptions {
  /** Most items per flush. */
  maxBatch: number;
  /** Least time between the starts of two flushes (0: flush as soon as the last one ends). */
  minGapMs?: number;
}

export function makeBatcher<I, O>(flush: (items: I[]) => Promise<O[]>, { maxBatch, minGapMs = 0 }: BatcherOptions): Batcher<I, O> {
  let pending: { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }[] = [];
  let running: Promise<void> | undefined;
  let scheduled = false;
  let lastStart = -Infinity;

  /** One flush of up to maxBatch items; what is added meanwhile waits for the next kick. */
  async function run(): Promise<void> {
    const batch = pending.length <= maxBatch ? pending : pending.slice(0, maxBatch);
    pending = pending.length <= maxBatch ? [] : pending.slice(maxBatch);
    try {
      const out = await flush(batch.map((p) => p.item));
      batch.forEach((p, i) => p.resolve(out[i] as O));
    } catch (err) {
      for (const p of batch) p.reject(err);
    }
  }

  function start(): void {
    scheduled = false;
    lastStart = performance.now();
    running = run().finally(() => {
      running = undefined;
      if (pending.length > 0) kick();
    });
  }

  function kick(): void {
    if (running || scheduled) return;
    scheduled = true;
    const wait = lastStart + minGapMs - performance.now();
    if (wait > 0 && pending.length < maxBatch) setTimeout(start, wait);
    else setImmediate(start);
  }

  return {
    add(item) {
      return new Promise<O>((resolve, reject) => {
        pending.push({ item, resolve, reject });
        kick();
      });
    },
    async drain() {
      while (pending.length > 0 || running || scheduled) {
        await (running ?? new Promise((r) => setImmediate(r)));
      }
    },
  };
}
