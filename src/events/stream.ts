import { num, partition, type StoreContext } from '../redis/context.ts';

/**
 * Trims a partition's events stream (lua/trim-events.lua): to `maxLen`, sparing whatever a
 * consumer group has not read and acknowledged, and to `hardMaxLen` whatever happens.
 * `lost` counts entries past the hard cap that a group still needed.
 */
export async function trimEvents(ctx: StoreContext, index: number, maxLen: number, hardMaxLen: number): Promise<{ trimmed: number; lost: number }> {
  const r = (await ctx.scripts.run('trim-events', [partition(ctx, index).events], [maxLen, hardMaxLen])) as unknown[];
  return { trimmed: num(r[0]), lost: num(r[1]) };
}
