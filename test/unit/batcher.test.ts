import { describe, expect, it } from 'vitest';
import { makeBatcher } from '../../src/engine/batcher.ts';

function deferred<T = void>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A flush that records each batch and answers each item with `item * 10`. */
function recordingFlush() {
  const batches: number[][] = [];
  const flush = async (items: number[]) => {
    batches.push(items);
    return items.map((i) => i * 10);
  };
  return { batches, flush };
}

describe('makeBatcher', () => {
  it('flushes items added in one tick in one call, answering each with its own result', async () => {
    const { batches, flush } = recordingFlush();
    const b = makeBatcher(flush, { maxBatch: 100 });
    const results = await Promise.all([b.add(1), b.add(2), b.add(3)]);
    expect(batches).toEqual([[1, 2, 3]]);
    expect(results).toEqual([10, 20, 30]);
  });

  it('does not call flush before anything is added', async () => {
    const { batches, flush } = recordingFlush();
    const b = makeBatcher(flush, { maxBatch: 10 });
    await b.drain();
    expect(batches).toEqual([]);
  });

  it('never passes more than maxBatch items to one flush, keeping order', async () => {
    const { batches, flush } = recordingFlush();
    const b = makeBatcher(flush, { maxBatch: 2 });
    const results = await Promise.all([1, 2, 3, 4, 5].map((i) => b.add(i)));
    expect(batches).toEqual([[1, 2], [3, 4], [5]]);
    expect(results).toEqual([10, 20, 30, 40, 50]);
  });

  it('groups items added while a flush is in flight into the next call', async () => {
    const gate = deferred();
    const started = deferred();
    const batches: number[][] = [];
    const b = makeBatcher(async (items: number[]) => {
      batches.push(items);
      if (batches.length === 1) {
        started.resolve();
        await gate.promise;
      }
      return items;
    }, { maxBatch: 100 });
    const first = b.add(1);
    await started.promise;
    const rest = [b.add(2), b.add(3), b.add(4)];
    gate.resolve();
    await Promise.all([first, ...rest]);
    expect(batches).toEqual([[1], [2, 3, 4]]);
  });

  it('rejects only the items of the batch whose flush failed', async () => {
    const boom = new Error('redis down');
    const b = makeBatcher(async (items: number[]) => {
      if (items.includes(1)) throw boom;
      return items.map((i) => i * 10);
    }, { maxBatch: 2 });
    const settled = await Promise.allSettled([1, 2, 3, 4].map((i) => b.add(i)));
    expect(settled).toEqual([
      { status: 'rejected', reason: boom },
      { status: 'rejected', reason: boom },
      { status: 'fulfilled', value: 30 },
      { status: 'fulfilled', value: 40 },
    ]);
  });

  it('keeps working after a failed flush', async () => {
    let fail = true;
    const b = makeBatcher(async (items: number[]) => {
      if (fail) {
        fail = false;
        throw new Error('once');
      }
      return items;
    }, { maxBatch: 10 });
    await expect(b.add(1)).rejects.toThrow('once');
    await expect(b.add(2)).resolves.toBe(2);
  });

  it('drain waits until everything added so far is flushed', async () => {
    const gate = deferred();
    const started = deferred();
    const done: number[] = [];
    const b = makeBatcher(async (items: number[]) => {
      started.resolve();
      await gate.promise;
      done.push(...items);
      return items;
    }, { maxBatch: 100 });
    void b.add(1);
    void b.add(2);
    let drained = false;
    const draining = b.drain().then(() => {
      drained = true;
    });
    await started.promise;
    expect(drained).toBe(false);
    gate.resolve();
    await draining;
    expect(done).toEqual([1, 2]);
  });

  it('drain also waits for items added while it is waiting', async () => {
    const { batches, flush } = recordingFlush();
    const b = makeBatcher(flush, { maxBatch: 1 });
    void b.add(1);
    const draining = b.drain();
    void b.add(2);
    await draining;
    expect(batches.flat()).toEqual([1, 2]);
  });

  it('drain resolves even when a flush failed', async () => {
    const b = makeBatcher(async () => {
      throw new Error('nope');
    }, { maxBatch: 10 });
    const added = b.add(1).catch((e: unknown) => e);
    await b.drain();
    expect(await added).toBeInstanceOf(Error);
  });

  describe('with a minimum gap between flushes', () => {
    it('a quiet batcher flushes at once: the gap only applies after a flush', async () => {
      const { batches, flush } = recordingFlush();
      const b = makeBatcher(flush, { maxBatch: 100, minGapMs: 1000 });
      const t0 = performance.now();
      expect(await b.add(1)).toBe(10);
      expect(performance.now() - t0).toBeLessThan(500);
      expect(batches).toEqual([[1]]);
    });

    it('items added within the gap wait for it and go out together', async () => {
      const { batches, flush } = recordingFlush();
      const starts: number[] = [];
      const b = makeBatcher(async (items: number[]) => {
        starts.push(performance.now());
        return flush(items);
      }, { maxBatch: 100, minGapMs: 50 });
      await b.add(1);
      const later = [b.add(2), b.add(3)];
      await new Promise((r) => setTimeout(r, 10));
      later.push(b.add(4));
      expect(await Promise.all(later)).toEqual([20, 30, 40]);
      expect(batches).toEqual([[1], [2, 3, 4]]);
      expect(starts).toHaveLength(2);
      // Timers may fire a little early by performance.now(); the gap is 50 ms.
      expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(45);
    });

    it('a full batch does not wait for the gap', async () => {
      const { batches, flush } = recordingFlush();
      const b = makeBatcher(flush, { maxBatch: 2, minGapMs: 10_000 });
      await b.add(1);
      const t0 = performance.now();
      expect(await Promise.all([b.add(2), b.add(3)])).toEqual([20, 30]);
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(batches).toEqual([[1], [2, 3]]);
    });

    it('drain waits for a flush the gap holds back', async () => {
      const { batches, flush } = recordingFlush();
      const b = makeBatcher(flush, { maxBatch: 100, minGapMs: 30 });
      await b.add(1);
      void b.add(2);
      await b.drain();
      expect(batches).toEqual([[1], [2]]);
    });
  });
});
