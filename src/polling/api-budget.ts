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
  /** Waits for a request's token. */
  acquire(signal: AbortSignal): Promise<void>;
  /** Letta answered 429: slow the fleet down. */
  throttled(retryAfterMs: number | undefined): void;
  /** The fleet's current rate (requests/s). */
  readonly rate: number | undefined;
}

/** Unused tokens go stale after this: a replica never saves up a burst. */
const TOKEN_TTL_MS = 250;
/** How long a wait for tokens may be at most, before asking again. */
const MAX_WAIT_MS = 1_000;

/** The bucket holds a tenth of a second's budget as burst (at least one request). */
const BURST_SHARE = 10;
/** After a 429 the rate climbs back by a tenth of the budget per second... */
const RECOVERY_SHARE = 10;
/** ...from a floor of a hundredth of it. */
const FLOOR_SHARE = 100;
/** A replica takes a twentieth of a second's refill per round trip. */
const BATCH_SHARE = 20;
/** Redis unreachable: ask again after this. */
const NO_REDIS_RETRY_MS = 100;
/** Shortest wait before asking again for tokens. */
const MIN_WAIT_MS = 5;
/** At most one 429 warning per this many ms. */
const THROTTLE_LOG_EVERY_MS = 10_000;

export function makeApiBudget(deps: { ctx: StoreContext; maxRps: number; clock: Clock; log: Logger; health: RedisHealth; onRate?: (rps: number) => void }): ApiBudget {
  // In any one-second window a client may use what accrues in that second plus the bucket's
  // burst: the refill is the budget less the burst, so the two together stay within it.
  const burst = Math.max(1, Math.floor(deps.maxRps / BURST_SHARE));
  const max = Math.max(0.1, deps.maxRps - burst);
  const step = Math.max(0.1, deps.maxRps / RECOVERY_SHARE);
  const floor = Math.max(0.1, deps.maxRps / FLOOR_SHARE);
  const batch = Math.max(1, Math.floor(max / BATCH_SHARE));
  let local = 0;
  let expires = 0;
  let rate = max;
  let fetching: Promise<number> | undefined;
  let lastLog = -Infinity;

  async function call(op: 'take' | 'throttle', n: number): Promise<{ granted: number; waitMs: number }> {
    const r = (await deps.ctx.scripts.run('budget', [deps.ctx.layout.apiBudget], [op, max, burst, n, step, floor])) as number[];
    rate = Number(r[1]) / 1000;
    deps.onRate?.(rate);
    return { granted: Number(r[0]), waitMs: Number(r[2]) };
  }

  /** Fetches tokens; resolves with how long to wait before asking again (0 when some came). */
  function refill(): Promise<number> {
    fetching ??= call('take', batch)
      .then(
        ({ granted, waitMs }) => {
          deps.health.recovered('API budget');
          if (granted > 0) {
            local = granted;
            expires = deps.clock.now() + TOKEN_TTL_MS;
            return 0;
          }
          return Math.min(MAX_WAIT_MS, Math.max(MIN_WAIT_MS, waitMs));
        },
        (err: unknown) => {
          // Without Redis there is nothing to share; the loops wait for Redis anyway.
          deps.health.report('API budget', err);
          return NO_REDIS_RETRY_MS;
        },
      )
      .finally(() => (fetching = undefined));
    return fetching;
  }

  return {
    async acquire(signal) {
      for (;;) {
        if (local > 0 && deps.clock.now() < expires) {
          local--;
          return;
        }
        local = 0;
        const wait = await refill();
        if (wait > 0) await deps.clock.sleep(wait, signal);
      }
    },
    throttled(retryAfterMs) {
      local = 0;
      void call('throttle', Math.max(0, Math.round(retryAfterMs ?? 0))).then(
        () => {
          if (deps.clock.now() - lastLog > THROTTLE_LOG_EVERY_MS) {
            lastLog = deps.clock.now();
            deps.log.warn({ rps: Number(rate.toFixed(2)), retry_after_ms: retryAfterMs ?? null }, `Letta answered 429: the fleet's API budget is now ${rate.toFixed(2)} requests/s, climbing back by ${step.toFixed(1)}/s`);
          }
        },
        (err: unknown) => deps.health.report('API budget', err),
      );
    },
    get rate() {
      return rate;
    },
  };
}
