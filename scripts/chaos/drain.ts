import type { ChaosOptions, Say } from './options.ts';
import { waitFor } from '../../test/kit/wait.ts';
import type { World } from './world.ts';

/**
 * After the chaos phase: waits (up to `drainTimeoutMs`, saying how far it got every 5 s) until
 * every run has its event and nothing is left watched, in intake or in the outbox. A timeout is
 * said, not thrown: the checks then tell what is missing.
 */
export async function drain(o: ChaosOptions, world: World, say: Say): Promise<void> {
  const { redis, keys: k } = world;
  const counts = async () => {
    const [events, watched, intake, outbox] = await Promise.all([redis.xlen(k.events), redis.zcard(k.due), redis.llen(k.intake), redis.zcard(k.webhooks)]);
    return { events, watched, intake, outbox };
  };
  const progress = async () => {
    const { events, watched, intake, outbox } = await counts();
    return `events ${events}/${o.runs}, watched ${watched}, intake ${intake}, outbox ${outbox}`;
  };
  let lastSaid = 0;
  await waitFor(
    async () => {
      if (Date.now() - lastSaid > 5000) {
        lastSaid = Date.now();
        say(await progress());
      }
      const { events, watched, intake, outbox } = await counts();
      return events >= o.runs && watched === 0 && intake === 0 && outbox === 0;
    },
    { timeoutMs: o.drainTimeoutMs, intervalMs: 100, describe: async () => `every event and every delivery: ${await progress()}` },
  ).catch((err: unknown) => say(String(err)));
}
