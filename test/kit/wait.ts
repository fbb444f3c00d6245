import { setTimeout as sleep } from 'node:timers/promises';

/** Waiting on observable state, for tests and the scripts alike (no test runner needed). */

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Included in the timeout error, to say what the state was. */
  describe?: () => Promise<string> | string;
}

/** Polls `predicate` until it returns something truthy, and returns that; throws on timeout. */
export async function waitFor<T>(
  predicate: () => Promise<T> | T,
  { timeoutMs = 20_000, intervalMs = 25, describe }: WaitOptions = {},
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await predicate();
      if (v) return v as NonNullable<T>;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      let detail = '';
      if (describe) {
        try {
          detail = `: ${await describe()}`;
        } catch (err) {
          detail = `: (describe failed: ${String(err)})`;
        }
      }
      const cause = lastError === undefined ? '' : ` (last error: ${String(lastError)})`;
      throw new Error(`waitFor timed out after ${timeoutMs} ms${detail}${cause}`);
    }
    await sleep(intervalMs);
  }
}
