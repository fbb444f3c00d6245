import type { Redis } from 'ioredis';
import type { Keys } from './schedule.ts';

export interface Status {
  intake: number;
  watched: number;
  due_now: number;
  webhook_backlog: number;
  dead_letters: number;
  events: number;
}

/** One pipelined round trip; the Redis TIME keeps "due now" in the schedule's own clock. */
export async function readStatus(redis: Redis, keys: Keys): Promise<Status> {
  const [seconds] = await redis.time();
  const now = Number(seconds) * 1000 + 999;
  const r = await redis
    .pipeline()
    .llen(keys.intake)
    .zcard(keys.schedule)
    .zcount(keys.schedule, '-inf', now)
    .zcard(keys.outbox)
    .llen(keys.dead)
    .xlen(keys.events)
    .exec();
  const n = (i: number) => {
    const [err, value] = r?.[i] ?? [new Error('no reply'), 0];
    if (err) throw err;
    return Number(value);
  };
  return { intake: n(0), watched: n(1), due_now: n(2), webhook_backlog: n(3), dead_letters: n(4), events: n(5) };
}
