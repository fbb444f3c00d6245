import type { Logger } from 'pino';
import type { Clock } from '../clock.ts';
import type { Metrics } from '../ops/metrics.ts';
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
 * Moves entries from P:intake into the watch state, a batch per call (store/intake.ts: each
 * entry is either still in the list, or watched, or dead-lettered). Runs flat out while the
 * list has entries; when it is empty, waits on it with a blocking command on a connection of
 * its own, so an idle daemon costs Redis one command per `idleMs` and an entry is taken the
 * moment it arrives.
 */
export function makeIntakeLoop(d: {
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
  let lastBeat = d.clock.now();
  const stopping = new AbortController();

  async function takeOnce(): Promise<number> {
    return counted(await d.store.take());
  }

  /** Counts what a move did, wakes the poller for new runs, throws a partition's failure. */
  function counted(r: IntakeResult): number {
    if (r.accepted) d.metrics.intake.inc({ result: 'accepted' }, r.accepted);
    if (r.duplicates) d.metrics.intake.inc({ result: 'duplicate' }, r.duplicates);
    if (r.rejected) {
      d.metrics.intake.inc({ result: 'rejected' }, r.rejected);
      d.metrics.deadLetters.inc({ kind: 'intake' }, r.rejected);
      d.log.warn({ rejected: r.rejected }, 'intake entries rejected; see the dead-letter list');
    }
    if (r.accepted) d.onAccepted();
    // Some partitions took their entries, one could not: what it holds is tried again.
    if (r.failure !== undefined) throw r.failure;
    return r.taken;
  }

  async function loop(): Promise<void> {
    let failures = 0;
    let more = true;
    while (!stopped) {
      lastBeat = d.clock.now();
      try {
        // Only when the blocking wait says there is something (or at start, or after a full
        // batch): an idle daemon sends one command per wait.
        const taken = more ? await takeOnce() : 0;
        if (failures > 0) d.health.recovered('intake');
        failures = 0;
        more = true;
        if (taken < d.batch && !stopped) {
          lastBeat = d.clock.now();
          more = await d.store.waitForEntries(d.blocking, d.idleMs);
          if (!more) {
            const adopted = await d.store.heartbeat();
            if (adopted) counted(adopted);
          }
        }
      } catch (err) {
        if (stopped) break;
        failures++;
        d.health.report('intake', err);
        await d.clock.sleep(Math.min(RETRY_MAX_MS, 100 * 2 ** Math.min(failures, 6)), stopping.signal).catch(() => {});
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
      d.blocking.disconnect();
      await done;
      try {
        await d.store.leave();
      } catch (err) {
        d.log.warn({ err }, 'could not finish the intake batch in hand; another replica takes it over');
      }
    },
    get lastBeat() {
      return lastBeat;
    },
  };
}
