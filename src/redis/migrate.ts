import type { Logger } from 'pino';
import { DaemonError } from '../errors.ts';
import { parseDeliveryMember } from './keys.ts';
import { num, type StoreContext } from './context.ts';
import type { RedisHealth } from './health.ts';

/**
 * The layout's version and partition count live in P:meta. A daemon whose partition count
 * differs from the one recorded would look for runs under the wrong keys, so it refuses to
 * start; and the state written by version 0.1 (a hash per run and per event) is moved into
 * this layout (lua/migrate-v1.lua), at start and then now and then, since 0.1 replicas may
 * still be running during a rolling upgrade.
 */
export const LAYOUT_VERSION = '2';
const BATCH = 200;

export async function checkLayout(ctx: StoreContext): Promise<void> {
  const { client, layout } = ctx;
  const n = layout.partitions.length;
  const type = await client.type(layout.meta);
  if (type !== 'none' && type !== 'hash') throw new DaemonError('ERR_LAYOUT', `Redis key ${layout.meta} holds a ${type}, expected a hash (the watcher's layout record)`);
  const meta = await client.hgetall(layout.meta);
  if (meta['partitions'] !== undefined && Number(meta['partitions']) !== n) {
    const watched = meta['partitions'];
    throw new DaemonError(
      'ERR_LAYOUT',
      `Redis under ${layout.prefix} holds the state of ${watched} partitions, but WATCHER_PARTITIONS is ${n}. ` +
        `Use ${watched}, or let the watcher drain (status shows nothing watched and no webhook backlog), then delete ${layout.meta}.`,
    );
  }
  if (n > 1 && ((await client.zcard(layout.legacy.schedule)) > 0 || (await client.zcard(layout.legacy.outbox)) > 0)) {
    throw new DaemonError(
      'ERR_LAYOUT',
      `Redis under ${layout.prefix} holds runs written by version 0.1; start once with WATCHER_PARTITIONS=1 to move them into this layout`,
    );
  }
  await client.hset(layout.meta, 'version', LAYOUT_VERSION, 'partitions', String(n));
}

/** Moves what version 0.1 left (one partition only); returns how many runs and deliveries moved. */
async function migrateLegacy(ctx: StoreContext): Promise<{ runs: number; deliveries: number }> {
  const { client, layout, scripts } = ctx;
  const p = layout.partitions[0];
  if (!p || layout.partitions.length > 1) return { runs: 0, deliveries: 0 };
  const { legacy } = layout;
  const total = { runs: 0, deliveries: 0 };
  for (;;) {
    const [ids, members] = await Promise.all([client.zrange(legacy.schedule, '0', String(BATCH - 1)), client.zrange(legacy.outbox, '0', String(BATCH - 1))]);
    if (ids.length === 0 && members.length === 0) return total;
    const keys = [legacy.schedule, legacy.outbox, p.due, p.runs, p.entries, p.webhooks, p.attempts, p.payloads, ...ids.map((id) => legacy.run(id)),
      ...members.map((m) => legacy.event(parseDeliveryMember(m).eventId))];
    const r = (await scripts.run('migrate-v1', keys, [ids.length, ...ids, ...members])) as unknown[];
    total.runs += num(r[0]);
    total.deliveries += num(r[1]);
  }
}

/** How often a one-partition daemon looks again for state a 0.1 replica may still be writing. */
const LEGACY_CHECK_MS = 30_000;

/**
 * Moves 0.1's state now, then every LEGACY_CHECK_MS while the layout has one partition (0.1
 * replicas may run beside this one during a rolling upgrade). Failures are reported, not thrown.
 */
export async function startLegacyMigration(ctx: StoreContext, deps: { log: Logger; health: RedisHealth }): Promise<{ stop(): void }> {
  const once = async () => {
    try {
      const moved = await migrateLegacy(ctx);
      if (moved.runs > 0 || moved.deliveries > 0) deps.log.warn(moved, 'moved watch state written by version 0.1 into this layout');
    } catch (err) {
      deps.health.report('migration of 0.1 state', err);
    }
  };
  await once();
  if (ctx.layout.partitions.length > 1) return { stop() {} };
  const timer = setInterval(() => void once(), LEGACY_CHECK_MS);
  timer.unref();
  return { stop: () => clearInterval(timer) };
}
