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
import { makeWorkLoop } from './work-loop.ts';

/**
 * Polling: claim due runs (as many as there is room for), poll each under the work loop's
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
  /** Claimed as the one probe allowed while 401/403 pauses polling. */
  probe: boolean;
}

export function makePoller(d: PollerDeps): Poller {
  const o = d.options;
  const random = d.random ?? Math.random;
  const log = d.log;
  // 401/403 pause: no requests but one probe per authPauseMs, until an answer that is not
  // 401/403 clears the pause. `paused` only changes on answers, so readiness does not flicker.
  let paused = false;
  let nextProbeAt = 0;
  let probing = false;

  const loop = makeWorkLoop<Held>({
    name: 'polls',
    concurrency: o.concurrency,
    maxRps: o.maxRps,
    claimBatch: o.claimBatch,
    clock: d.clock,
    log,
    async claim(limit) {
      const r = await d.schedule.claim(limit, o.leaseMs);
      const local = d.clock.now();
      const probe = probing;
      probing = false;
      return {
        items: r.claims.map((claim) => ({ claim, claimedAtLocal: local, claimedAtRedis: r.now, probe })),
        idleMs: r.nextDue === undefined ? 1000 : Math.max(5, r.nextDue - r.now),
      };
    },
    process: (h, signal) => pollOne(h, signal),
    handBack: (h) => sendReschedule(h, 0, false),
    claimLimit(free, held) {
      if (!paused) return { limit: free, waitMs: 0 };
      const wait = nextProbeAt - d.clock.now();
      if (wait > 0 || held > 0) return { limit: 0, waitMs: Math.max(wait, 50) };
      nextProbeAt = d.clock.now() + o.authPauseMs;
      probing = true;
      return { limit: 1, waitMs: 0 };
    },
  });

  async function pollOne(h: Held, signal: AbortSignal): Promise<void> {
    const { claim } = h;
    // Claimed before the pause began: wait it out without a request.
    if (paused && !h.probe) return reschedule(h, o.authPauseMs, false);
    const polls = claim.polls + 1;
    const began = d.clock.now();
    let failure: DaemonError | undefined;
    let lookup;
    try {
      lookup = await d.client.getRun(claim.runId, signal);
    } catch (err) {
      if (signal.aborted) return reschedule(h, 0, false);
      failure = isDaemonError(err) ? err : new DaemonError('ERR_API_NETWORK', String(err), { cause: err });
    }
    d.metrics.pollDuration.observe((d.clock.now() - began) / 1000);
    const redisNow = h.claimedAtRedis + (d.clock.now() - h.claimedAtLocal);
    const expired = redisNow >= claim.deadline;

    if (failure || !lookup) {
      d.metrics.polls.inc({ outcome: 'error' });
      if (expired) return track(commit(h, 'run.expired', null, polls));
      const delay = Math.max(nextPollDelay(polls, o, random), Math.min(failure?.retryAfterMs ?? 0, 3_600_000));
      log.warn({ run_id: claim.runId, err: failure, retry_in_ms: delay }, 'poll failed; the run stays watched');
      return reschedule(h, delay, true);
    }
    if (lookup.kind !== 'auth' && paused) {
      paused = false;
      d.metrics.authPaused.set(0);
      log.warn('Letta API accepts our credentials again; polling resumes');
      loop.wake();
    }
    switch (lookup.kind) {
      case 'found': {
        const state = classifyRun(lookup.run.status);
        if (state.terminal) {
          d.metrics.polls.inc({ outcome: 'terminal' });
          return track(commit(h, state.type, lookup.run, polls));
        }
        if (!state.known) log.warn({ run_id: claim.runId, status: lookup.run.status }, 'unknown run status; treating the run as not finished');
        d.metrics.polls.inc({ outcome: 'pending' });
        if (expired) return track(commit(h, 'run.expired', lookup.run, polls));
        return reschedule(h, nextPollDelay(polls, o, random), true);
      }
      case 'not_found':
        d.metrics.polls.inc({ outcome: 'not_found' });
        return track(commit(h, 'run.not_found', null, polls));
      case 'bad_id':
        d.metrics.polls.inc({ outcome: 'bad_id' });
        return track(deadLetter(h, lookup.status));
      case 'auth':
        d.metrics.polls.inc({ outcome: 'auth' });
        if (!paused) {
          log.error(
            { status: lookup.status },
            'Letta API refused our credentials (check LETTA_API_KEY); polling is paused, no run is dropped',
          );
          paused = true;
          nextProbeAt = d.clock.now() + o.authPauseMs;
        }
        d.metrics.authPaused.set(1);
        return reschedule(h, o.authPauseMs, false);
    }
  }

  /**
   * Settling runs after the request, outside the p-queue slot: the slot is for API requests,
   * and a poll need not hold one through its Redis round trip. A reschedule is one op handed
   * to the batcher (stop() drains it); a commit or dead-letter first reads the run's entry, so
   * stop() waits for those in `settling` too.
   */
  const settling = new Set<Promise<void>>();
  function track(p: Promise<void>): void {
    settling.add(p);
    p.catch(settleFailed).finally(() => {
      settling.delete(p);
      loop.wake();
    });
  }
  function settleFailed(err: unknown): void {
    log.error({ err }, 'could not settle a poll; the run comes due again when its lease ends');
  }
  function rescheduled(ok: boolean): void {
    if (!ok) d.metrics.leasesLost.inc();
    // The claim loop may be asleep until a due time it read before this run was rescheduled.
    loop.wake();
  }

  async function deadLetter(h: Held, status: number): Promise<void> {
    const { claim } = h;
    const dead = JSON.stringify({
      kind: 'run',
      reason: `Letta API answered ${status}: it does not accept this run ID`,
      at: new Date(d.clock.now()).toISOString(),
      entry: (await d.schedule.entryOf(claim.runId)) ?? claim.runId,
    });
    const ok = await d.settle.add({ kind: 'D', runId: claim.runId, token: claim.token, deadJson: dead });
    if (ok) d.metrics.deadLetters.inc({ kind: 'run' });
    else d.metrics.leasesLost.inc();
  }

  /** Not awaited: the poll's p-queue slot is free while the batcher sends this. */
  function reschedule(h: Held, delayMs: number, polled: boolean): void {
    void sendReschedule(h, delayMs, polled);
  }
  function sendReschedule(h: Held, delayMs: number, polled: boolean): Promise<void> {
    return d.settle
      .add({ kind: 'R', runId: h.claim.runId, token: h.claim.token, delayMs: Math.round(delayMs), polled })
      .then(rescheduled, settleFailed);
  }

  async function commit(h: Held, type: EventType, run: Run | null, polls: number): Promise<void> {
    const { claim } = h;
    // The intake entry, for its metadata (null for a bare ID): one HGET per finished run, so
    // the claim, once per poll, need not look.
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
    start: () => loop.start(),
    wake: () => loop.wake(),
    async stop(graceMs) {
      await loop.stop(graceMs);
      while (settling.size > 0) await Promise.allSettled([...settling]);
      await d.settle.drain();
    },
    get inFlight() {
      return loop.held;
    },
    get authPaused() {
      return paused;
    },
    get lastBeat() {
      return loop.lastBeat;
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
