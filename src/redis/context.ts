import type { Layout, PartitionKeys } from './keys.ts';
import type { RedisClient, Scripts } from './scripts.ts';

/** What every store module works with: one client, its scripts, the key layout, who we are. */
export interface StoreContext {
  readonly client: RedisClient;
  readonly scripts: Scripts;
  readonly layout: Layout;
  /** This process's replica id (claims, processing lists, probes). */
  readonly replica: string;
}

export function partition(ctx: StoreContext, index: number): PartitionKeys {
  const p = ctx.layout.partitions[index];
  if (!p) throw new RangeError(`no partition ${index} (there are ${ctx.layout.partitions.length})`);
  return p;
}

/** Lua numbers come back as integers, strings as strings; this reads either as a number. */
export function num(v: unknown): number {
  return typeof v === 'number' ? v : Number(v);
}
