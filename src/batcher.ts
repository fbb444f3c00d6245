/**
 * Coalesces many small Redis writes into one round trip: items added in the same tick (or
 * while a flush is in flight) go out together, at most `maxBatch` at a time. This is what
 * keeps the poll path near one Redis round trip per batch of polls rather than per poll.
 */
export interface Batcher<I, O> {
  add(item: I): Promise<O>;
  /** Resolves when everything added so far has been flushed. */
  drain(): Promise<void>;
}

export function makeBatcher<I, O>(flush: (items: I[]) => Promise<O[]>, maxBatch: number): Batcher<I, O> {
  let pending: { item: I; resolve: (o: O) => void; reject: (e: unknown) => void }[] = [];
  let running: Promise<void> | undefined;
  let scheduled = false;

  async function run(): Promise<void> {
    while (pending.length > 0) {
      const batch = pending.slice(0, maxBatch);
      pending = pending.slice(batch.length);
      try {
        const out = await flush(batch.map((p) => p.item));
        batch.forEach((p, i) => p.resolve(out[i] as O));
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
  }

  function kick(): void {
    if (running || scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      running = run().finally(() => {
        running = undefined;
        if (pending.length > 0) kick();
      });
    });
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
