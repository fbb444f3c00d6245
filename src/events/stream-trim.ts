import type { Logger } from 'pino';
import type { Metrics } from '../ops/metrics.ts';
import type { RedisHealth } from '../redis/health.ts';
import { num, partition, type StoreContext } from '../redis/context.ts';

/**
 * Keeps each events stream near `events.streamMaxLen` without dropping what a consumer group
 * has not read and acknowledged (lua/trim-events.lua). A partition is trimmed after commits, at
 * most once per `everyMs`, so an idle daemon sends nothing. Entries the hard cap had to drop
 * although a group still needed them are counted and logged at error level.
 */
export interface StreamTrimmer {
  /** A commit landed in `partition`. */
  committed(partition: number): void;
  stop(): Promise<void>;
}

export function makeStreamTrimmer(deps: {
  ctx: StoreContext;
  maxLen: number;
  hardMaxLen: number;
  everyMs: number;
  log: Logger;
  metrics: Metrics;
  health: RedisHealth;
}): StreamTrimmer {
  const timers = new Map<number, NodeJS.Timeout>();
  const running = new Set<Promise<void>>();
  let stopped = false;

  async function trim(partition: number): Promise<void> {
    try {
      const { lost } = await trimEvents(deps.ctx, partition, deps.maxLen, deps.hardMaxLen);
      deps.health.recovered('stream trimming');
      if (lost > 0) {
        deps.metrics.eventsDroppedUnread.inc(lost);
        deps.log.error(
          { stream: deps.ctx.layout.partitions[partition]?.events, dropped: lost, hard_cap: deps.hardMaxLen },
          `dropped ${lost} events that a consumer group had not read or acknowledged: the stream reached events.streamHardMaxLen; a consumer is down or too slow`,
        );
      }
    } catch (err) {
      deps.health.report('stream trimming', err);
    }
  }

  return {
    committed(partition) {
      if (stopped || timers.has(partition)) return;
      const timer = setTimeout(() => {
        timers.delete(partition);
        const p = trim(partition).finally(() => running.delete(p));
        running.add(p);
      }, deps.everyMs);
      timer.unref();
      timers.set(partition, timer);
    },
    async stop() {
      stopped = true;
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
      await Promise.all(running);
    },
  };
}

/**
 * Trims a partition's events stream (lua/trim-events.lua): to `maxLen`, sparing whatever a
 * consumer group has not read and acknowledged, and to `hardMaxLen` whatever happens.
 * `lost` counts entries past the hard cap that a group still needed.
 */
async function trimEvents(ctx: StoreContext, index: number, maxLen: number, hardMaxLen: number): Promise<{ trimmed: number; lost: number }> {
  const r = (await ctx.scripts.run('trim-events', [partition(ctx, index).events], [maxLen, hardMaxLen])) as unknown[];
  return { trimmed: num(r[0]), lost: num(r[1]) };
}
