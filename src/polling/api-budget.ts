import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { RedisHealth } from '../redis/health.ts';
import type { StoreContext } from '../redis/context.ts';

/**
 * One API budget for the fleet (WATCHER_API_RPS): every request to Letta first takes a token
 * from a bucket in Redis (lua/budget.lua) shared by all replicas, so N sidecars with one API key
 * make at most that many requests a second together, start-up bursts included. Tokens are
 * taken a few at a time (about 50 ms worth) and kept briefly, so a request costs no Redis
 * round trip of its own. A 429 from Letta halves the fleet's rate and pauses it for the
 * Retry-After; the rate climbs back by a tenth of the budget per second.
 */
export interface ApiBudget {
  /** Waits for a request's token (at once when there is no budget). */
  acquire(signal: AbortSignal): Promise<void>;
  /** Letta answered 429: slow the fleet down. */
  throttled(retryAfterMs: number | undefined): void;
  /** The fleet's current rate (requests/s), or undefined without a budget. */
  readonly rate: number | undefined;
}

export const NO_BUDGET: ApiBudget = { acquire: async () => {}, throttled: () => {}, rate: undefined };

/** Unused tokens go stale after this: a replica never saves up a burst. */
const TOKEN_TTL_MS = 250;
/** How long a wait for tokens may be at most, before asking again. */
const MAX_WAIT_MS = 1_000;

export function makeApiBudget(o: { ctx: StoreContext; maxRps: number; clock: Clock; log: Logger; health: RedisHealth; onRate?: (rps: number) => void }): ApiBudget {
  // In any one-second window a client may use what accrues in that second plus the bucket's
  // burst: the refill is the budget less the burst, so the two together stay within it.
  const burst = Math.max(1, Math.floor(o.maxRps / 10));
  const max = Math.max(0.1, o.maxRps - burst);
  const step = Math.max(0.1, o.maxRps / 10);
  const floor = Math.max(0.1, o.maxRps / 100);
  const batch = Math.max(1, Math.floor(max / 20));
  let local = 0;
  let expires = 0;
  let rate = max;
  let fetching: Promise<number> | undefined;
  let lastLog = -Infinity;

  async function call(op: 'take' | 'throttle', n: number): Promise<{ granted: number; waitMs: number }> {
    const r = (await o.ctx.scripts.run('budget', [o.ctx.layout.apiBudget], [op, max, burst, n, step, floor])) as number[];
    rate = Number(r[1]) / 1000;
    o.onRate?.(rate);
    return { granted: Number(r[0]), waitMs: Number(r[2]) };
  }

  /** Fetches tokens; resolves with how long to wait before asking again (0 when some came). */
  function refill(): Promise<number> {
    fetching ??= call('take', batch)
      .then(
        ({ granted, waitMs }) => {
          o.health.recovered('API budget');
          if (granted > 0) {
            local = granted;
            expires = o.clock.now() + TOKEN_TTL_MS;
            return 0;
          }
          return Math.min(MAX_WAIT_MS, Math.max(5, waitMs));
        },
        (err: unknown) => {
          // Without Redis there is nothing to share; the loops wait for Redis anyway.
          o.health.report('API budget', err);
          return 100;
        },
      )
      .finally(() => (fetching = undefined));
    return fetching;
  }

  return {
    async acquire(signal) {
      for (;;) {
        if (local > 0 && o.clock.now() < expires) {
          local--;
          return;
        }
        local = 0;
        const wait = await refill();
        if (wait > 0) await o.clock.sleep(wait, signal);
      }
    },
    throttled(retryAfterMs) {
      local = 0;
      void call('throttle', Math.max(0, Math.round(retryAfterMs ?? 0))).then(
        () => {
          if (o.clock.now() - lastLog > 10_000) {
            lastLog = o.clock.now();
            o.log.warn({ rps: Number(rate.toFixed(2)), retry_after_ms: retryAfterMs ?? null }, `Letta answered 429: the fleet's API budget is now ${rate.toFixed(2)} requests/s, climbing back by ${step.toFixed(1)}/s`);
          }
        },
        (err: unknown) => o.health.report('API budget', err),
      );
    },
    get rate() {
      return rate;
    },
  };
}
