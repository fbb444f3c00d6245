import type { StoreContext } from './context.ts';

/** What `status` prints and the gauges export, summed over partitions. */
export interface Status {
  intake: number;
  watched: number;
  due_now: number;
  webhook_backlog: number;
  dead_letters: number;
  events: number;
  partitions: number;
  /** The events stream of each partition, for consumers (["P:events"] with one partition). */
  event_streams: string[];
  dead_letter_lists: string[];
}

/** One pipelined round trip per partition; "due now" is judged on Redis's clock. */
export async function readStatus(ctx: StoreContext): Promise<Status> {
  const [seconds] = await ctx.client.time();
  const now = Number(seconds) * 1000 + 999;
  const s: Status = {
    intake: await ctx.client.llen(ctx.layout.intake),
    watched: 0,
    due_now: 0,
    webhook_backlog: 0,
    dead_letters: 0,
    events: 0,
    partitions: ctx.layout.partitions.length,
    event_streams: ctx.layout.partitions.map((p) => p.events),
    dead_letter_lists: ctx.layout.partitions.map((p) => p.dead),
  };
  await Promise.all(
    ctx.layout.partitions.map(async (p) => {
      const r = await ctx.client.pipeline().hlen(p.runs).zcount(p.due, '-inf', now).zcard(p.webhooks).llen(p.dead).xlen(p.events).exec();
      const n = (i: number) => {
        const [err, value] = r?.[i] ?? [new Error('no reply from Redis'), 0];
        if (err) throw err;
        return Number(value);
      };
      s.watched += n(0);
      s.due_now += n(1);
      s.webhook_backlog += n(2);
      s.dead_letters += n(3);
      s.events += n(4);
    }),
  );
  return s;
}
