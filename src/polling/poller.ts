import type { Logger } from 'pino';
import type { ApiGate } from './api-gate.ts';
import { makeBatcher, type Batcher } from '../engine/batcher.ts';
import { nextPollDelay, type CadenceOptions } from './cadence.ts';
import { classifyRun, parseLettaTime } from '../letta/run-state.ts';
import type { Clock } from '../clock.ts';
import { DaemonError, isDaemonError } from '../errors.ts';
import { buildEvent, type EventType, type WatchEvent } from '../events/event.ts';
import type { LettaClient, Run } from '../letta/client.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { RedisHealth } from '../redis/health.ts';
import { runDeadLetter } from '../dead-letters.ts';
import type { RunClaim, RunSettle, RunStore } from './runs.ts';
import { claimAcrossPartitions, makeWorkLoop } from '../engine/work-loop.ts';

/**
 * Polling: claim due runs (from every partition, fairly), poll each under the work loop's
 * concurrency and rate limits, then settle it (reschedule, commit its event, or dead-letter
 * it) through a batcher per partition. A run's state never leaves Redis: if this process dies,
 * its leases stop being renewed and run out, and another replica (or this one, restarted)
 * polls those runs.
 */
export interface PollerOptions extends CadenceOptions {
  concurrency: number;
  maxRps: number;
  leaseMs: number;
  claimBatch: number;
  /** While paused, one probe per this many ms. */
  probeEveryMs: number;
  /** Delay of a new delivery's first attempt. */
  firstDeliveryMs: number;
  /** A run still going this long after it was created is reported stalled, once; 0 = never. */
  stalledAfterMs: number;
}

export interface PollerDeps {
  runs: RunStore;
  partitions: number;
  client: LettaClient;
  gate: ApiGate;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  health: RedisHealth;
  options: PollerOptions;
  random?: () => number;
  /** The configured webhook targets an event goes to. */
  targetsFor: (event: WatchEvent) => readonly string[];
  /** Called once per committed event, with its partition (the log sink, stream trimming, webhook wake-up). */
  onEvent: (event: WatchEvent, partition: number) => void;
}

export interface Poller {
  start(): void;
  /** Wakes the claim loop early (new intake). */
  wake(): void;
  /** Stops claiming, lets running polls finish within graceMs, hands back the rest. */
  stop(graceMs: number): Promise<void>;
  /** Clock time of the loop's last turn (liveness). */
  readonly lastBeat: number;
  /** Whether there is anything to watch, as far as the last claims saw. */
  readonly watching: boolean;
  /** Runs in `partition` came due now (reconciliation): claim there at once. */
  dueNow(partition: number): void;
  /** A hint that a run may have ended (Letta's callback): poll it now if watched; whether it is. */
  hint(runId: string): Promise<boolean>;
}

interface Held {
  claim: RunClaim;
  /** Local clock time matching the claim's Redis time, to judge the deadline. */
  claimedAtLocal: number;
  claimedAtRedis: number;
  /** Claimed as the one probe allowed while paused for credentials. */
  probe: boolean;
}

/** Settle round trips under load: at most one per partition per this many ms (see batcher.ts). */
const SETTLE_GAP_MS = 5;
const SETTLE_BATCH = 256;
/** While paused, the claim loop looks again after the next probe is due, and never sooner than this. */
const PAUSED_MIN_WAIT_MS = 50;

export function makePoller(deps: PollerDeps): Poller {
  const options = deps.options;
  const random = deps.random ?? Math.random;
  const { log, gate } = deps;
  let probing = false;
  let healthProbe: Promise<void> | undefined;

  const settlers: Batcher<RunSettle, boolean>[] = Array.from({ length: deps.partitions }, (_, p) =>
    makeBatcher((ops) => deps.runs.settle(p, ops, options.firstDeliveryMs), { maxBatch: SETTLE_BATCH, minGapMs: SETTLE_GAP_MS }),
  );
  const settle = (claim: RunClaim, op: RunSettle) => (settlers[claim.partition] as Batcher<RunSettle, boolean>).add(op);

  const claims = claimAcrossPartitions<Held>({
    partitions: deps.partitions,
    clock: deps.clock,
    async claimOne(p, limit) {
      const r = await deps.runs.claim(p, limit, options.leaseMs);
      const local = deps.clock.now();
      return { items: r.claims.map((claim) => ({ claim, claimedAtLocal: local, claimedAtRedis: r.now, probe: false })), now: r.now, nextDue: r.nextDue };
    },
    onPartitionError: (p, err) => deps.health.report(`poll claims of partition ${p}`, err),
    onPartitionOk: (p) => deps.health.recovered(`poll claims of partition ${p}`),
  });

  const loop = makeWorkLoop<Held>({
    name: 'polls',
    concurrency: options.concurrency,
    maxRps: options.maxRps,
    claimBatch: options.claimBatch,
    clock: deps.clock,
    log,
    async claim(limit) {
      // The probe belongs to the loop's claim (of one run), not to the first partition it tries,
      // which may be empty; a claim that found nothing due gives the probe back.
      const probe = probing;
      probing = false;
      const claimed = await claims.claim(limit).catch((err: unknown) => {
        if (probe) gate.returnProbe();
        throw err;
      });
      if (probe && claimed.items.length === 0) gate.returnProbe();
      if (probe) for (const h of claimed.items) h.probe = true;
      return claimed;
    },
    process: (h, signal) => pollOne(h, signal),
    handBack: (h) => reschedule(h, 0, false),
    claimLimit(free, held) {
      if (gate.open) return { limit: free, waitMs: 0 };
      const current = gate.current;
      if (current.state === 'paused' && current.reason === 'not-letta') {
        // The probe is a health check, not a run: no claim while the URL is wrong.
        if (gate.takeProbe()) probeHealth();
        return { limit: 0, waitMs: Math.max(gate.msToProbe, PAUSED_MIN_WAIT_MS) };
      }
      if (held > 0 || !gate.takeProbe()) return { limit: 0, waitMs: Math.max(gate.msToProbe, PAUSED_MIN_WAIT_MS) };
      probing = true;
      return { limit: 1, waitMs: 0 };
    },
    renew: (items) => renew(items),
    renewEveryMs: Math.floor(options.leaseMs / 3),
    onClaimError: (err) => deps.health.report('poll claims', err),
    onClaimOk: () => deps.health.recovered('poll claims'),
  });

  async function renew(items: Held[]): Promise<void> {
    const byPartition = new Map<number, RunClaim[]>();
    for (const { claim } of items) byPartition.set(claim.partition, [...(byPartition.get(claim.partition) ?? []), claim]);
    await Promise.all([...byPartition].map(([p, list]) => deps.runs.renew(p, list, options.leaseMs)));
  }

  /** A health check as the probe of a not-Letta pause. */
  function probeHealth(): void {
    healthProbe ??= (async () => {
      try {
        const verdict = await deps.client.checkHealth(AbortSignal.timeout(options.probeEveryMs));
        if (verdict.kind === 'letta') {
          gate.resume();
          loop.wake();
        } else if (verdict.kind === 'auth') gate.pause('credentials', `GET /v1/health/ answered ${verdict.status}`);
      } finally {
        healthProbe = undefined;
      }
    })();
  }

  async function pollOne(h: Held, signal: AbortSignal): Promise<void> {
    const { claim } = h;
    // Claimed before the pause began: wait it out without a request.
    if (!gate.open && !h.probe) return track(reschedule(h, options.probeEveryMs, false));
    const polls = claim.polls + 1;
    const began = deps.clock.now();
    let failure: DaemonError | undefined;
    let lookup;
    try {
      lookup = await deps.client.getRun(claim.runId, signal);
    } catch (err) {
      if (signal.aborted) return track(reschedule(h, 0, false));
      failure = isDaemonError(err) ? err : new DaemonError('ERR_API_NETWORK', String(err), { cause: err });
    }
    deps.metrics.pollDuration.observe((deps.clock.now() - began) / 1000);
    const expired = redisNow(h) >= claim.deadline;

    if (failure || !lookup) {
      deps.metrics.polls.inc({ outcome: 'error' });
      if (expired) return track(commit(h, 'run.expired', null, polls));
      const delay = Math.max(nextPollDelay(polls, options, random), failure?.retryAfterMs ?? 0);
      log.warn({ run_id: claim.runId, err: failure, retry_in_ms: delay }, 'poll failed; the run stays watched');
      return track(reschedule(h, delay, true));
    }
    if (lookup.kind !== 'auth' && lookup.kind !== 'not_letta' && !gate.open) {
      gate.resume();
      loop.wake();
    }
    switch (lookup.kind) {
      case 'found': {
        const state = classifyRun(lookup.run.status);
        if (state.terminal) {
          deps.metrics.polls.inc({ outcome: 'terminal' });
          return track(commit(h, state.type, lookup.run, polls));
        }
        if (!state.known) log.warn({ run_id: claim.runId, status: lookup.run.status }, 'unknown run status; treating the run as not finished');
        deps.metrics.polls.inc({ outcome: 'pending' });
        if (expired) return track(commit(h, 'run.expired', lookup.run, polls));
        if (isStalled(h, lookup.run)) return track(stall(h, lookup.run, polls));
        return track(reschedule(h, nextPollDelay(polls, options, random), true, lookup.run));
      }
      case 'not_found':
        deps.metrics.polls.inc({ outcome: 'not_found' });
        return track(commit(h, 'run.not_found', null, polls));
      case 'bad_id':
        deps.metrics.polls.inc({ outcome: 'bad_id' });
        return track(deadLetter(h, lookup.status));
      case 'auth':
        deps.metrics.polls.inc({ outcome: 'auth' });
        gate.pause('credentials', `it answered ${lookup.status}`);
        return track(reschedule(h, options.probeEveryMs, false));
      case 'not_letta':
        deps.metrics.polls.inc({ outcome: 'not_letta' });
        gate.pause('not-letta', `GET /v1/runs/{run_id} answered ${lookup.status} ${lookup.detail}`);
        return track(reschedule(h, options.probeEveryMs, false));
    }
  }

  /** Still going stalledAfterMs after it was created (or, not knowing that, enqueued), and not yet reported. */
  function isStalled(h: Held, run: Run): boolean {
    if (options.stalledAfterMs <= 0 || h.claim.stalledAt !== undefined) return false;
    const since = h.claim.createdAt ?? parseLettaTime(run.created_at) ?? h.claim.enqueuedAt;
    return redisNow(h) - since >= options.stalledAfterMs;
  }

  /** Redis's clock now, from the claim's Redis time and the local time since. */
  function redisNow(h: Held): number {
    return h.claimedAtRedis + (deps.clock.now() - h.claimedAtLocal);
  }

  /**
   * Settles run after the request, outside the p-queue slot: the slot is for API requests, and
   * a poll need not hold one through its Redis round trip. stop() waits for these.
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

  /**
   * A polled run's next poll is never past its deadline (a Retry-After of an hour on a run
   * watched for a minute): the last poll happens at the deadline at the latest, and expires it.
   */
  function untilDeadline(h: Held, delayMs: number): number {
    return Math.min(delayMs, Math.max(0, h.claim.deadline - redisNow(h)));
  }

  async function reschedule(h: Held, delayMs: number, polled: boolean, run?: Run): Promise<void> {
    const delay = polled ? untilDeadline(h, delayMs) : delayMs;
    const createdAt = h.claim.createdAt === undefined ? parseLettaTime(run?.created_at) : undefined;
    const ok = await settle(h.claim, { kind: 'reschedule', runId: h.claim.runId, counter: h.claim.counter, delayMs: Math.round(delay), polled, createdAt });
    if (!ok) deps.metrics.leasesLost.inc();
    // The claim loop may be asleep until a due time it read before this run was rescheduled.
    claims.dueIn(h.claim.partition, delay);
  }

  async function deadLetter(h: Held, status: number): Promise<void> {
    const { claim } = h;
    const entry = (await deps.runs.entryOf(claim.partition, claim.runId)) ?? claim.runId;
    const letter = runDeadLetter(`Letta API answered ${status}: it does not accept this run ID`, new Date(deps.clock.now()), entry);
    const ok = await settle(claim, { kind: 'dead-letter', runId: claim.runId, counter: claim.counter, deadLetterJson: letter });
    if (ok) deps.metrics.deadLetters.inc({ kind: 'run' });
    else deps.metrics.leasesLost.inc();
  }

  /** run.stalled: the event goes out once and the watch goes on (settle.lua op T). */
  async function stall(h: Held, run: Run, polls: number): Promise<void> {
    const { claim } = h;
    const entry = await deps.runs.entryOf(claim.partition, claim.runId);
    const detectedAt = deps.clock.now();
    const event = buildEvent({ type: 'run.stalled', runId: claim.runId, run, metadata: metadataOf(entry), enqueuedAt: claim.enqueuedAt, detectedAt, polls, stalledAt: detectedAt });
    const delayMs = Math.round(untilDeadline(h, nextPollDelay(polls, options, random)));
    const ok = await settle(claim, { kind: 'stall', runId: claim.runId, counter: claim.counter, eventJson: JSON.stringify(event), eventId: event.id, targets: deps.targetsFor(event), delayMs });
    claims.dueIn(claim.partition, delayMs);
    if (!ok) {
      deps.metrics.leasesLost.inc();
      return;
    }
    deps.metrics.events.inc({ type: 'run.stalled' });
    deps.onEvent(event, claim.partition);
  }

  async function commit(h: Held, type: EventType, run: Run | null, polls: number): Promise<void> {
    const { claim } = h;
    // The intake entry, for its metadata (null for a bare ID): one read per finished run, so
    // the claim, once per poll, need not carry it.
    const entry = await deps.runs.entryOf(claim.partition, claim.runId);
    const detectedAt = deps.clock.now();
    const event = buildEvent({ type, runId: claim.runId, run, metadata: metadataOf(entry), enqueuedAt: claim.enqueuedAt, detectedAt, polls, stalledAt: claim.stalledAt });
    const ok = await settle(claim, {
      kind: 'commit',
      runId: claim.runId,
      counter: claim.counter,
      eventJson: JSON.stringify(event),
      eventId: event.id,
      targets: deps.targetsFor(event),
    });
    if (!ok) {
      deps.metrics.leasesLost.inc();
      log.debug({ run_id: claim.runId }, 'lease lost before commit; another replica owns the run');
      return;
    }
    deps.metrics.events.inc({ type });
    const finished = parseLettaTime(run?.completed_at);
    if (finished !== undefined && type !== 'run.expired') deps.metrics.detectionLag.observe(Math.max(0, detectedAt - finished) / 1000);
    deps.onEvent(event, claim.partition);
  }

  return {
    start: () => loop.start(),
    wake() {
      claims.invalidate();
      loop.wake();
    },
    async stop(graceMs) {
      await loop.stop(graceMs);
      while (settling.size > 0) await Promise.allSettled([...settling]);
      await Promise.all(settlers.map((s) => s.drain()));
      await healthProbe;
    },
    get lastBeat() {
      return loop.lastBeat;
    },
    get watching() {
      return claims.watching;
    },
    dueNow(partition) {
      claims.dueIn(partition, 0);
      loop.wake();
    },
    async hint(runId) {
      const { partition, watched } = await deps.runs.hint(runId);
      if (watched) {
        claims.dueIn(partition, 0);
        loop.wake();
      }
      return watched;
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
