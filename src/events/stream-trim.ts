import type { Logger } from 'pino';
import type { Metrics } from '../ops/metrics.ts';
import type { RedisHealth } from '../redis/health.ts';
import type { StoreContext } from '../redis/context.ts';
import { trimEvents } from './stream.ts';

/**
 * Keeps each events stream near `events.streamMaxLen` without dropping what a consumer group
 * has not read and acknowledged (store/events.ts). A partition is trimmed after commits, at
 * most once per `everyMs`, so an idle daemon sends nothing. Entries the hard cap had to drop
 * although a group still needed them are counted and logged at error level.
 */
export interface StreamTrimmer {
  /** A commit landed in `partition`. */
  committed(partition: number): void;
  stop(): Promise<void>;
}

export function makeStreamTrimmer(o: {
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
      const { lost } = await trimEvents(o.ctx, partition, o.maxLen, o.hardMaxLen);
      o.health.recovered('stream trimming');
      if (lost > 0) {
        o.metrics.eventsDroppedUnread.inc(lost);
        o.log.error(
          { stream: o.ctx.layout.partitions[partition]?.events, dropped: lost, hard_cap: o.hardMaxLen },
          `dropped ${lost} events that a consumer group had not read or acknowledged: the stream reached events.streamHardMaxLen; a consumer is down or too slow`,
        );
      }
    } catch (err) {
      o.health.report('stream trimming', err);
    }
  }

  return {
    committed(partition) {
      if (stopped || timers.has(partition)) return;
      const timer = setTimeout(() => {
        timers.delete(partition);
        const p = trim(partition).finally(() => running.delete(p));
        running.add(p);
      }, o.everyMs);
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
