import type { Logger } from 'pino';
import type { Clock } from './clock.ts';
import { DaemonError } from './errors.ts';
import type { Metrics } from './metrics.ts';
import type { IntakeLimits, Schedule } from './schedule.ts';

/** The run ID rule of the contract; the intake Lua script applies the same one. */
export const RUN_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

export interface EntryOptions {
  webhookUrl?: string | undefined;
  metadata?: Record<string, unknown> | undefined;
  maxWatchMs?: number | undefined;
}

/**
 * Builds the intake entry a producer would push (used by `enqueue`): a bare ID when there is
 * nothing else to say, JSON otherwise. Rejects what the daemon would dead-letter, so the user
 * hears about it now rather than finding it in P:dead.
 */
export function buildEntry(runId: string, o: EntryOptions = {}): string {
  if (!RUN_ID_PATTERN.test(runId)) {
    throw new DaemonError('ERR_USAGE', `run ID ${JSON.stringify(runId)} does not match ${RUN_ID_PATTERN.source}`);
  }
  // The same rule as the intake script: http(s), no white space or control characters, ≤ 2048.
  if (o.webhookUrl !== undefined && (!/^https?:\/\/[^\s/?#]+/i.test(o.webhookUrl) || o.webhookUrl.length > 2048 || /[\s\x00-\x1f\x7f]/.test(o.webhookUrl))) {
    throw new DaemonError('ERR_USAGE', `--webhook ${JSON.stringify(o.webhookUrl)} is not an http(s) URL`);
  }
  if (o.maxWatchMs !== undefined && (!Number.isInteger(o.maxWatchMs) || o.maxWatchMs < 1)) {
    throw new DaemonError('ERR_USAGE', `--max-watch-ms must be a positive whole number of milliseconds`);
  }
  if (o.webhookUrl === undefined && o.metadata === undefined && o.maxWatchMs === undefined) return runId;
  return JSON.stringify({
    run_id: runId,
    ...(o.webhookUrl === undefined ? {} : { webhook_url: o.webhookUrl }),
    ...(o.metadata === undefined ? {} : { metadata: o.metadata }),
    ...(o.maxWatchMs === undefined ? {} : { max_watch_ms: o.maxWatchMs }),
  });
}

export interface IntakeLoop {
  start(): void;
  stop(): Promise<void>;
  readonly lastBeat: number;
}

/**
 * Moves entries from P:intake into the schedule, a batch per Lua call (atomic: an entry is
 * either still in the list or already watched or dead-lettered). Runs flat out while the list
 * has entries, then checks every `idleMs`.
 */
export function makeIntakeLoop(d: {
  schedule: Schedule;
  limits: IntakeLimits;
  idleMs: number;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  onAccepted: () => void;
}): IntakeLoop {
  const stop = new AbortController();
  let done: Promise<void> | undefined;
  let lastBeat = d.clock.now();

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stop.signal.aborted) {
      lastBeat = d.clock.now();
      let taken = 0;
      try {
        const r = await d.schedule.intake(d.limits, new Date(d.clock.now()).toISOString());
        failures = 0;
        taken = r.taken;
        if (r.accepted) d.metrics.intake.inc({ result: 'accepted' }, r.accepted);
        if (r.duplicates) d.metrics.intake.inc({ result: 'duplicate' }, r.duplicates);
        if (r.rejected) {
          d.metrics.intake.inc({ result: 'rejected' }, r.rejected);
          d.metrics.deadLetters.inc({ kind: 'intake' }, r.rejected);
          d.log.warn({ rejected: r.rejected }, 'intake entries rejected; see the dead-letter list');
        }
        if (r.accepted) d.onAccepted();
      } catch (err) {
        failures++;
        if (failures === 1 || failures % 30 === 0) d.log.error({ err }, 'cannot read the intake list from Redis; retrying');
        await d.clock.sleep(Math.min(5000, 100 * 2 ** Math.min(failures, 6)), stop.signal).catch(() => {});
        continue;
      }
      if (taken < d.limits.batch) await d.clock.sleep(d.idleMs, stop.signal).catch(() => {});
    }
  }

  return {
    start() {
      done ??= loop();
    },
    async stop() {
      stop.abort();
      await done;
    },
    get lastBeat() {
      return lastBeat;
    },
  };
}
