import type { PartitionKeys } from '../redis/keys.ts';
import type { StoreContext } from '../redis/context.ts';

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
  /** The operator events stream (partition 0's). */
  ops_stream: string;
  /** Webhook endpoints whose last announced state is failing (endpoint.failing). */
  endpoints_failing: number;
}

/** One pipelined round trip per partition; "due now" is judged on Redis's clock. */
export async function readStatus(ctx: StoreContext): Promise<Status> {
  const [seconds] = await ctx.client.time();
  // The end of Redis's current second: whatever is due within it counts as due now.
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
    ops_stream: (ctx.layout.partitions[0] as PartitionKeys).ops,
    endpoints_failing: 0,
  };
  await Promise.all(
    ctx.layout.partitions.map(async (p) => {
      const pipe = ctx.client.pipeline().hlen(p.runs).zcount(p.due, '-inf', now).zcard(p.webhooks).llen(p.dead).xlen(p.events);
      // Partition 0 holds delivery health: one small record per endpoint not known healthy.
      if (p.index === 0) pipe.hvals(p.endpoints);
      const r = await pipe.exec();
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
      if (p.index === 0) s.endpoints_failing = failingIn(r?.[5]);
    }),
  );
  return s;
}

/** How many health records (lua/endpoint-health.lua) say failing. */
function failingIn(reply: [Error | null, unknown] | undefined): number {
  const [err, values] = reply ?? [new Error('no reply from Redis'), []];
  if (err) throw err;
  let failing = 0;
  for (const v of values as string[]) {
    try {
      if ((JSON.parse(v) as { said?: unknown }).said === 'failing') failing++;
    } catch {
      // not a record this version wrote
    }
  }
  return failing;
}
