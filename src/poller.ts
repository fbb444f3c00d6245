import PQueue from 'p-queue';
import type { Logger } from 'pino';
import type { Batcher } from './batcher.ts';
import { nextPollDelay, type CadenceOptions } from './cadence.ts';
import { classifyRun, parseLettaTime, type EventType } from './classify.ts';
import type { Clock } from './clock.ts';
import { DaemonError, isDaemonError } from './errors.ts';
import { buildEvent, type WatchEvent } from './events.ts';
import type { LettaClient, Run } from './letta-client.ts';
import type { Metrics } from './metrics.ts';
import type { Claim, Schedule, SettleOp } from './schedule.ts';

/**
 * The poll loop: claim due runs (as many as there is room for), poll each under p-queue's
 * concurrency and rate limits, then settle it — reschedule, commit its event, or dead-letter
 * it — through the batcher. A run's state never leaves Redis: if this process dies, the
 * lease on each run it held runs out and another replica (or this one, restarted) polls it.
 */
export interface PollerOptions extends CadenceOptions {
  concurrency: number;
  maxRps: number;
  leaseMs: number;
  claimBatch: number;
  authPauseMs: number;
}

export interface PollerDeps {
  schedule: Schedule;
  settle: Batcher<SettleOp, boolean>;
  client: LettaClient;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  options: PollerOptions;
  random?: () => number;
  /** Called once per committed event (the log sink). */
  onEvent: (event: WatchEvent) => void;
}

export interface Poller {
  start(): void;
  /** Wakes the claim loop early (new intake). */
  wake(): void;
  /** Stops claiming, lets running polls finish within graceMs, hands back the rest. */
  stop(graceMs: number): Promise<void>;
  readonly inFlight: number;
  readonly authPaused: boolean;
  /** Clock time of the loop's last turn (liveness). */
  readonly lastBeat: number;
}

interface Held {
  claim: Claim;
  /** Local clock time matching the claim's Redis time, to judge the deadline. */
  claimedAtLocal: number;
  claimedAtRedis: number;
  /** Aborts the poll itself (after the shutdown grace). */
  controller: AbortController;
  /** Removes the task from p-queue while it still waits for a slot. */
  dequeue: AbortController;
  started: boolean;
  done: Promise<void>;
}

/** Upper bound on how long the loop sleeps when nothing is due, so a missed wake costs little. */
const IDLE_WAIT_MS = 1000;

export function makePoller(d: PollerDeps): Poller {
  const o = d.options;
  const random = d.random ?? Math.random;
  const log = d.log;
  const queue = new PQueue({
    concurrency: o.concurrency,
    ...(o.maxRps > 0
      ? o.maxRps >= 1
        ? { intervalCap: Math.floor(o.maxRps), interval: 1000, strict: true }
        : { intervalCap: 1, interval: Math.round(1000 / o.maxRps), strict: true }
      : {}),
  });
  // Twice the concurrency: polls never wait on a claim round trip, and leases held in the
  // local backlog stay short.
  const capacity = o.concurrency * 2;
  const held = new Map<string, Held>();
  const stopController = new AbortController();
  let loopDone: Promise<void> | undefined;
  let wakeUp: (() => void) | undefined;
  let pausedUntil = 0;
  let lastBeat = d.clock.now();

  function wake(): void {
    wakeUp?.();
  }

  async function idle(ms: number): Promise<void> {
    const ctl = new AbortController();
    wakeUp = () => ctl.abort();
    try {
      await d.clock.sleep(ms, AbortSignal.any([ctl.signal, stopController.signal]));
    } catch {
      // woken or stopping
    } finally {
      wakeUp = undefined;
    }
  }

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stopController.signal.aborted) {
      lastBeat = d.clock.now();
      const paused = pausedUntil > lastBeat;
      // Claim in batches: wait until the local backlog has drained to the running polls.
      if (held.size > o.concurrency) {
        await idle(IDLE_WAIT_MS);
        continue;
      }
      // While paused by 401/403, one probe at a time tells us when credentials work again.
      const limit = paused ? (held.size === 0 ? 1 : 0) : Math.min(capacity - held.size, o.claimBatch);
      if (limit === 0) {
        await idle(Math.min(IDLE_WAIT_MS, Math.max(1, pausedUntil - lastBeat)));
        continue;
      }
      let result;
      try {
        result = await d.schedule.claim(limit, o.leaseMs);
        failures = 0;
      } catch (err) {
        failures++;
        if (failures === 1 || failures % 30 === 0) log.error({ err }, 'cannot claim runs from Redis; retrying');
        await idle(Math.min(5000, 100 * 2 ** Math.min(failures, 6)));
        continue;
      }
      const localNow = d.clock.now();
      for (const claim of result.claims) start(claim, localNow, result.now);
      if (paused) {
        await idle(Math.max(1, pausedUntil - d.clock.now()));
      } else if (result.claims.length < limit) {
        const untilNext = result.nextDue === undefined ? IDLE_WAIT_MS : result.nextDue - result.now;
        await idle(Math.min(IDLE_WAIT_MS, Math.max(5, untilNext)));
      }
    }
  }

  function start(claim: Claim, localNow: number, redisNow: number): void {
    const dequeue = new AbortController();
    const h: Held = {
      claim,
      claimedAtLocal: localNow,
      claimedAtRedis: redisNow,
      controller: new AbortController(),
      dequeue,
      started: false,
      done: Promise.resolve(),
    };
    held.set(claim.runId, h);
    h.done = queue
      .add(
        async () => {
          h.started = true;
          await pollOne(h);
        },
        { signal: dequeue.signal },
      )
      .catch(async (err: unknown) => {
        // Dequeued before it ran (stopping): give the run back at once.
        if (!h.started) await handBack(h);
        else log.error({ err, run_id: claim.runId }, 'poll task failed; the run comes due again when its lease ends');
      })
      .finally(() => {
        held.delete(claim.runId);
        if (held.size <= o.concurrency) wake();
      });
  }

  async function pollOne(h: Held): Promise<void> {
    const { claim } = h;
    const signal = h.controller.signal;
    const polls = claim.polls + 1;
    const began = d.clock.now();
    let failure: DaemonError | undefined;
    let lookup;
    try {
      lookup = await d.client.getRun(claim.runId, signal);
    } catch (err) {
      if (signal.aborted) return await handBack(h);
      failure = isDaemonError(err) ? err : new DaemonError('ERR_API_NETWORK', String(err), { cause: err });
    }
    d.metrics.pollDuration.observe((d.clock.now() - began) / 1000);
    const redisNow = h.claimedAtRedis + (d.clock.now() - h.claimedAtLocal);
    const expired = redisNow >= claim.deadline;

    if (failure || !lookup) {
      d.metrics.polls.inc({ outcome: 'error' });
      if (expired) return await commit(h, 'run.expired', null, polls);
      const delay = Math.max(nextPollDelay(polls, o, random), Math.min(failure?.retryAfterMs ?? 0, 3_600_000));
      log.warn({ run_id: claim.runId, err: failure, retry_in_ms: delay }, 'poll failed; the run stays watched');
      return await reschedule(h, delay, 1);
    }
    if (lookup.kind !== 'auth' && pausedUntil > 0) {
      pausedUntil = 0;
      d.metrics.authPaused.set(0);
      log.warn('Letta API accepts our credentials again; polling resumes');
      wake();
    }
    switch (lookup.kind) {
      case 'found': {
        const state = classifyRun(lookup.run.status);
        if (state.terminal) {
          d.metrics.polls.inc({ outcome: 'terminal' });
          return await commit(h, state.type, lookup.run, polls);
        }
        if (!state.known) log.warn({ run_id: claim.runId, status: lookup.run.status }, 'unknown run status; treating the run as not finished');
        d.metrics.polls.inc({ outcome: 'pending' });
        if (expired) return await commit(h, 'run.expired', lookup.run, polls);
        return await reschedule(h, nextPollDelay(polls, o, random), 1);
      }
      case 'not_found':
        d.metrics.polls.inc({ outcome: 'not_found' });
        return await commit(h, 'run.not_found', null, polls);
      case 'bad_id': {
        d.metrics.polls.inc({ outcome: 'bad_id' });
        const dead = JSON.stringify({
          kind: 'run',
          reason: `Letta API answered ${lookup.status}: it does not accept this run ID`,
          at: new Date(d.clock.now()).toISOString(),
          entry: (await d.schedule.entryOf(claim.runId)) ?? claim.runId,
        });
        const ok = await d.settle.add({ kind: 'D', runId: claim.runId, token: claim.token, deadJson: dead });
        if (ok) d.metrics.deadLetters.inc({ kind: 'run' });
        else d.metrics.leasesLost.inc();
        return;
      }
      case 'auth':
        d.metrics.polls.inc({ outcome: 'auth' });
        if (pausedUntil === 0) {
          log.error(
            { status: lookup.status },
            'Letta API refused our credentials (check LETTA_API_KEY); polling is paused, no run is dropped',
          );
        }
        pausedUntil = d.clock.now() + o.authPauseMs;
        d.metrics.authPaused.set(1);
        return await reschedule(h, o.authPauseMs, 0);
    }
  }

  async function reschedule(h: Held, delayMs: number, addPolls: number): Promise<void> {
    const ok = await d.settle.add({ kind: 'R', runId: h.claim.runId, token: h.claim.token, delayMs: Math.round(delayMs), addPolls });
    if (!ok) d.metrics.leasesLost.inc();
  }

  async function handBack(h: Held): Promise<void> {
    try {
      await reschedule(h, 0, 0);
    } catch (err) {
      // The lease will run out by itself; nothing is lost.
      log.warn({ err, run_id: h.claim.runId }, 'could not hand back a run; it comes due when its lease ends');
    }
  }

  async function commit(h: Held, type: EventType, run: Run | null, polls: number): Promise<void> {
    const { claim } = h;
    const entry = await d.schedule.entryOf(claim.runId);
    const detectedAt = d.clock.now();
    const event = buildEvent({
      type,
      runId: claim.runId,
      run,
      metadata: metadataOf(entry),
      enqueuedAt: claim.enqueuedAt,
      detectedAt,
      polls,
    });
    const ok = await d.settle.add({ kind: 'C', runId: claim.runId, token: claim.token, eventJson: JSON.stringify(event), eventId: event.id });
    if (!ok) {
      d.metrics.leasesLost.inc();
      log.debug({ run_id: claim.runId }, 'lease lost before commit; another replica owns the run');
      return;
    }
    d.metrics.events.inc({ type });
    const finished = parseLettaTime(run?.completed_at);
    if (finished !== undefined && type !== 'run.expired') d.metrics.detectionLag.observe(Math.max(0, detectedAt - finished) / 1000);
    d.onEvent(event);
  }

  return {
    start() {
      loopDone ??= loop();
    },
    wake,
    async stop(graceMs) {
      stopController.abort();
      wake();
      await loopDone;
      // Not started yet: take them out of the queue, which hands them back.
      for (const h of held.values()) if (!h.started) h.dequeue.abort();
      const all = () => Promise.all([...held.values()].map((h) => h.done));
      const graceOver = new AbortController();
      const timer = d.clock.sleep(graceMs, graceOver.signal).then(() => 'timeout' as const, () => 'done' as const);
      const first = await Promise.race([all().then(() => 'done' as const), timer]);
      graceOver.abort();
      if (first === 'timeout' && held.size > 0) {
        log.warn({ in_flight: held.size }, 'shutdown grace ran out; handing back unfinished polls');
        for (const h of held.values()) h.controller.abort();
        await all();
      }
    },
    get inFlight() {
      return held.size;
    },
    get authPaused() {
      return pausedUntil > d.clock.now();
    },
    get lastBeat() {
      return lastBeat;
    },
  };
}

function metadataOf(entry: string | null): Record<string, unknown> | null {
  if (!entry) return null;
  try {
    const m = (JSON.parse(entry) as { metadata?: unknown }).metadata;
    return typeof m === 'object' && m !== null && !Array.isArray(m) ? (m as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
