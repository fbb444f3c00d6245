import type { StoreContext } from './context.ts';

/** The probe key outlives a few probes' timeouts, then expires (nothing to clean up). */
const probeKeyTtlMs = (timeoutMs: number) => Math.max(1_000, timeoutMs * 10);

/**
 * Readiness against the write path: one script per slot group (the intake's, then each
 * partition's) that writes a probe key and checks every key's type. A replica that cannot
 * write (READONLY after a failover, CLUSTERDOWN) fails here; so does a Redis that does not
 * answer within `timeoutMs`. Returns the problems found, each naming its key or cause.
 */

export async function probeRedis(ctx: StoreContext, timeoutMs: number, describe: (err: unknown) => string): Promise<string[]> {
  const { layout } = ctx;
  const groups: { probe: string; keys: [string, string][] }[] = [
    { probe: layout.intakeProbe, keys: [[layout.intake, 'list']] },
    ...layout.partitions.map((p) => ({
      probe: p.probe,
      keys: [
        [p.due, 'zset'], [p.runs, 'hash'], [p.created, 'zset'], [p.entries, 'hash'], [p.events, 'stream'], [p.dead, 'list'], [p.webhooks, 'zset'],
        [p.attempts, 'hash'], [p.payloads, 'hash'], [p.disabled, 'set'], [p.moved, 'zset'],
        // Delivery health lives in partition 0 only.
        ...(p.index === 0 ? [[p.ops, 'stream'], [p.endpoints, 'hash']] : []),
      ] as [string, string][],
    })),
  ];
  const results = await Promise.all(
    groups.map(async (g) => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<string[]>((resolve) => {
        timer = setTimeout(() => resolve([`Redis does not answer within ${timeoutMs} ms`]), timeoutMs);
      });
      const call = ctx.scripts
        .run('probe', [g.probe, ...g.keys.map(([k]) => k)], [ctx.replica, probeKeyTtlMs(timeoutMs), ...g.keys.map(([, t]) => t)])
        .then(
          (problems) => (problems as string[]).map((p) => `Redis key ${p}`),
          (err: unknown) => [describe(err)],
        );
      try {
        return await Promise.race([call, timeout]);
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  return [...new Set(results.flat())];
}
