/**
 * Time as a port: production uses the wall clock, tests drive a manual one. Fake timers do not
 * reach `timers/promises`, so every wait in the daemon goes through `sleep` here.
 */
export interface Clock {
  now(): number;
  /** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  // Not timers/promises: on abort it builds a new AbortError (with a stack trace) every time,
  // and the work loops abort their idle sleep after nearly every poll. This rejects with the
  // signal's own reason.
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason as Error);
      const onAbort = () => {
        clearTimeout(timer);
        reject(signal?.reason as Error);
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, Math.max(0, ms));
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

/** A clock that only moves when told to; sleepers wake in due order as time passes. */
export function manualClock(start = 0): Clock & { advance(ms: number): void; readonly sleepers: number } {
  let now = start;
  let waiting: { until: number; wake: () => void }[] = [];
  return {
    now: () => now,
    get sleepers() {
      return waiting.length;
    },
    sleep(ms, signal) {
      return new Promise<void>((resolve, reject) => {
        if (signal?.aborted) return reject(signal.reason as Error);
        const entry = {
          until: now + Math.max(0, ms),
          wake: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
        };
        const onAbort = () => {
          waiting = waiting.filter((w) => w !== entry);
          reject(signal?.reason as Error);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        waiting.push(entry);
      });
    },
    advance(ms) {
      now += ms;
      const due = waiting.filter((w) => w.until <= now).sort((a, b) => a.until - b.until);
      waiting = waiting.filter((w) => w.until > now);
      for (const w of due) w.wake();
    },
  };
}
