import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Metrics } from '../ops/metrics.ts';
import { dropRedis } from '../redis/connection.ts';
import type { RedisHealth } from '../redis/health.ts';
import type { RedisClient } from '../redis/scripts.ts';
import type { IntakeResult, IntakeStore } from './store.ts';

export interface IntakeLoop {
  start(): void;
  stop(): Promise<void>;
  readonly lastBeat: number;
}

const RETRY_MAX_MS = 5_000;

/**
 * Moves entries from P:intake into the watch state, a batch per call (intake/store.ts: each
 * entry is either still in the list, or watched, or dead-lettered). Runs flat out while the
 * list has entries; when it is empty, waits on it with a blocking command on a connection of
 * its own, so an idle daemon costs Redis one command per `idleMs` and an entry is taken the
 * moment it arrives.
 */
export function makeIntakeLoop(deps: {
  store: IntakeStore;
  /** Held by the blocking wait; closed by stop(). */
  blocking: RedisClient;
  batch: number;
  idleMs: number;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  health: RedisHealth;
  onAccepted: () => void;
}): IntakeLoop {
  let stopped = false;
  let done: Promise<void> | undefined;
  let lastBeat = deps.clock.now();
  const stopping = new AbortController();

  async function takeOnce(): Promise<number> {
    return counted(await deps.store.take());
  }

  /** Counts what a move did, wakes the poller for new runs, throws a partition's failure. */
  function counted(r: IntakeResult): number {
    if (r.accepted) deps.metrics.intake.inc({ result: 'accepted' }, r.accepted);
    if (r.duplicates) deps.metrics.intake.inc({ result: 'duplicate' }, r.duplicates);
    if (r.rejected) {
      deps.metrics.intake.inc({ result: 'rejected' }, r.rejected);
      deps.metrics.deadLetters.inc({ kind: 'intake' }, r.rejected);
      deps.log.warn({ rejected: r.rejected }, 'intake entries rejected; see the dead-letter list');
    }
    if (r.accepted) deps.onAccepted();
    // Some partitions took their entries, one could not: what it holds is tried again.
    if (r.failure !== undefined) throw r.failure;
    return r.taken;
  }

  async function loop(): Promise<void> {
    let failures = 0;
    let more = true;
    while (!stopped) {
      lastBeat = deps.clock.now();
      try {
        // Only when the blocking wait says there is something (or at start, or after a full
        // batch): an idle daemon sends one command per wait.
        const taken = more ? await takeOnce() : 0;
        if (failures > 0) deps.health.recovered('intake');
        failures = 0;
        more = true;
        if (taken < deps.batch && !stopped) {
          lastBeat = deps.clock.now();
          more = await deps.store.waitForEntries(deps.blocking, deps.idleMs);
          if (!more) {
            const adopted = await deps.store.heartbeat();
            if (adopted) counted(adopted);
          }
        }
      } catch (err) {
        if (stopped) break;
        failures++;
        deps.health.report('intake', err);
        await deps.clock.sleep(Math.min(RETRY_MAX_MS, 100 * 2 ** Math.min(failures, 6)), stopping.signal).catch(() => {});
      }
    }
  }

  return {
    start() {
      done ??= loop();
    },
    async stop() {
      stopped = true;
      stopping.abort();
      // Ends a blocking wait in progress.
      dropRedis(deps.blocking);
      await done;
      try {
        await deps.store.leave();
      } catch (err) {
        deps.log.warn({ err }, 'could not finish the intake batch in hand; another replica takes it over');
      }
    },
    get lastBeat() {
      return lastBeat;
    },
  };
}
