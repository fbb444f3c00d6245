import type { Logger } from 'pino';
import { Webhook } from 'standardwebhooks';
import { Agent, request, type Dispatcher } from 'undici';
import { makeBatcher, type Batcher } from '../engine/batcher.ts';
import { parseRetryAfter } from '../retry-after.ts';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import { eventId, isRunEvent, type AnyEvent } from '../events/event.ts';
import type { Metrics } from '../ops/metrics.ts';
import type { RedisHealth } from '../redis/health.ts';
import { deliveryMember } from '../redis/keys.ts';
import { deliveryDeadLetter } from '../dead-letters.ts';
import type { EndpointHealth, HealthReport } from './endpoint-health.ts';
import type { DeliveryClaim, DeliverySettle, Outbox } from './outbox.ts';
import type { UrlGuard } from './url-guard.ts';
import { claimAcrossPartitions, makeWorkLoop, type WorkLoop } from '../engine/work-loop.ts';
import type { Format, RenderedRequest } from './format.ts';
import { resolveTarget, type Target } from './targets.ts';

/**
 * Webhook delivery from the durable outbox: each delivery is rendered in its target's format
 * (formats/), signed (Standard Webhooks), retried on a jittered schedule held in Redis, and
 * dead-lettered after the last attempt. A slow host (an origin, however many URLs it has)
 * holds at most a quarter of the delivery slots, and nothing here is on the poll path. Each
 * attempt's outcome feeds the endpoint's health (webhooks/endpoint-health.ts), which raises operator
 * events.
 */

/** The host a target is counted under for the slot cap: its origin, or the raw text if it does not parse. */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

/** Standard Webhooks headers; one signature per secret, so receivers can rotate. */
export function signatureHeaders(id: string, at: Date, body: string, signers: readonly Webhook[]): Record<string, string> {
  return {
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': signers.map((s) => s.sign(id, at, body)).join(' '),
  };
}

export interface DeliveryDeps {
  outbox: Outbox;
  partitions: number;
  health: RedisHealth;
  config: Config['webhooks'];
  secrets: readonly string[];
  guard: UrlGuard;
  targets: readonly Target[];
  formats: ReadonlyMap<string, Format>;
  /** Where attempt outcomes go to raise operator events; none in some tests. */
  endpoints?: EndpointHealth;
  /** For configured targets; tests pass a MockAgent. */
  dispatcher?: Dispatcher;
  clock: Clock;
  log: Logger;
  metrics: Metrics;
  random?: () => number;
}

const RESPECT_RETRY_AFTER = new Set([429, 502, 503, 504]);

/** Reads at most `limit` bytes of a response for the dead-letter record, then drops the rest. */
async function readSnippet(body: Dispatcher.ResponseData['body'], limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      size += (chunk as Buffer).length;
      if (size >= limit) break;
    }
  } catch {
    // a broken body still tells us the status
  } finally {
    body.destroy();
  }
  return Buffer.concat(chunks).subarray(0, limit).toString('utf8');
}

/** Settle round trips: as engine/batcher.ts says; deliveries are few next to polls, so no gap. */
const SETTLE_BATCH = 256;
/** A delivery deferred because its host is at its cap waits this long, plus up to as long again. */
const DEFER_MS = 250;
/** A run's end waits this long for the stall alert before it to go first (lua/stall-order.lua). */
const STALL_ORDER_WAIT_MS = 500;
/** Bytes of a failed response kept in the dead letter. */
const RESPONSE_SNIPPET_BYTES = 512;
/** The name operator events give the per-run URLs, counted as one endpoint (they are the callers'). */
const PER_RUN_ENDPOINT = '(per-run)';

/** What one attempt's requests got: the first that was not a 2xx stops the rest. */
interface AttemptResult {
  status: number | undefined;
  detail: string;
  retryAfterMs: number | undefined;
}

export function makeDeliveryWorker(deps: DeliveryDeps): WorkLoop {
  const config = deps.config;
  const random = deps.random ?? Math.random;
  const configured = new Map(deps.targets.map((t) => [t.key, t]));
  const signers = deps.secrets.map((s) => new Webhook(s));
  const perHostLimit = Math.max(1, Math.ceil(config.concurrency / 4));
  /** Attempts in flight per origin. */
  const inFlight = new Map<string, number>();
  const settlers: Batcher<DeliverySettle, boolean>[] = Array.from({ length: deps.partitions }, (_, p) =>
    makeBatcher((ops) => deps.outbox.settle(p, ops), { maxBatch: SETTLE_BATCH }),
  );
  const log = deps.log;
  // Configured targets are the operator's and may well be on a private network: they go
  // through a plain agent. Per-run targets go through the guard's agent, which re-checks
  // addresses when it connects.
  const trusted = deps.dispatcher ?? new Agent({ keepAliveTimeout: 10_000 });
  const reporting = new Set<Promise<unknown>>();
  const reporter = deps.endpoints
    ? makeBatcher<HealthReport, null>(
        async (reports) => {
          const { raised, recorded } = await (deps.endpoints as EndpointHealth).report(reports, new Date(deps.clock.now()));
          for (const e of raised) {
            deps.metrics.opsEvents.inc({ type: e.type });
            log.warn({ type: e.type, target: e.target, event_id: e.id }, 'operator event');
          }
          // Operator events are delivered from partition 0's outbox.
          if (recorded > 0) wake(0, config.scheduleMs[0] ?? 0);
          return reports.map(() => null);
        },
        { maxBatch: SETTLE_BATCH },
      )
    : undefined;

  function jittered(ms: number): number {
    return Math.round(ms * (1 + config.jitter * (2 * random() - 1)));
  }

  function wake(partition: number, inMs: number): void {
    // The loop may be asleep until a due time it read before this delivery was put back.
    claims.dueIn(partition, inMs);
    loop.wake();
  }

  async function settle(claim: DeliveryClaim, op: DeliverySettle): Promise<void> {
    await (settlers[claim.partition] as Batcher<DeliverySettle, boolean>).add(op);
    if (op.kind === 'retry' || op.kind === 'hand-back' || op.kind === 'again') wake(claim.partition, op.delayMs);
  }

  async function finish(claim: DeliveryClaim, op: DeliverySettle, outcome: string): Promise<void> {
    deps.metrics.deliveries.inc({ outcome });
    if (op.kind === 'dead-letter') deps.metrics.deadLetters.inc({ kind: 'delivery' });
    await settle(claim, op);
  }

  /** An attempt's outcome, for the endpoint's health (operator events); not awaited. */
  function report(target: Target, event: AnyEvent, outcome: HealthReport['outcome'], r: AttemptResult): void {
    if (!reporter) return;
    const detail = r.status === undefined ? r.detail : `answered HTTP ${r.status}`;
    const name = target.perRun ? PER_RUN_ENDPOINT : target.name;
    const p = reporter
      .add({ name, selfKey: target.key, outcome, status: r.status, detail, eventId: isRunEvent(event) ? event.id : undefined })
      .then(() => deps.health.recovered('endpoint health'), (err: unknown) => deps.health.report('endpoint health', err));
    reporting.add(p);
    void p.finally(() => reporting.delete(p));
  }

  function deadLetter(claim: DeliveryClaim, target: Target | undefined, reason: string, extra: Record<string, unknown> = {}): DeliverySettle & { kind: 'dead-letter' } {
    const letter = deliveryDeadLetter(reason, new Date(deps.clock.now()), {
      target: claim.targetKey,
      format: target?.format ?? null,
      attempts: claim.attempts,
      ...extra,
      event: JSON.parse(claim.eventJson) as unknown,
    });
    return { kind: 'dead-letter', member: claim.member, counter: claim.counter, deadLetterJson: letter, disableTarget: false };
  }

  /**
   * A stalled run's alert and its resolution go to a target in that order (lua/stall-order.lua):
   * false when this delivery must not go now (a stall alert for a run that has ended is done
   * unsent; a run's end waits for the stall alert before it).
   */
  async function inOrder(claim: DeliveryClaim, event: AnyEvent, format: Format): Promise<'send' | 'obsolete' | 'wait'> {
    if (!format.resolvesStalled || !isRunEvent(event)) return 'send';
    const runId = event.data.run_id;
    if (event.type === 'run.stalled') {
      return (await deps.outbox.stallOrder(claim.partition, 'stall', runId, claim.member, config.leaseMs)) ? 'send' : 'obsolete';
    }
    if (event.data.watch.stalled_at === null) return 'send';
    const stall = deliveryMember(eventId(runId, 'run.stalled'), claim.targetKey);
    return (await deps.outbox.stallOrder(claim.partition, 'end', runId, stall, config.leaseMs)) ? 'send' : 'wait';
  }

  /** Sends the requests in order; the first that gets no 2xx ends the attempt. */
  async function send(requests: readonly RenderedRequest[], target: Target, claim: DeliveryClaim, signal: AbortSignal): Promise<AttemptResult> {
    let result: AttemptResult = { status: undefined, detail: '', retryAfterMs: undefined };
    for (const [i, r] of requests.entries()) {
      // Each message its own id (Standard Webhooks), the same on every retry.
      const id = i === 0 ? claim.eventId : `${claim.eventId}_${i}`;
      const headers = {
        ...target.headers,
        'content-type': r.contentType,
        'user-agent': 'letta-run-watcher',
        ...signatureHeaders(id, new Date(deps.clock.now()), r.body, signers),
      };
      const res = await request(r.url, {
        method: 'POST',
        headers,
        body: r.body,
        signal: AbortSignal.any([signal, AbortSignal.timeout(config.attemptTimeoutMs)]),
        dispatcher: target.perRun ? deps.guard.dispatcher : trusted,
      });
      result = { status: res.statusCode, detail: await readSnippet(res.body, RESPONSE_SNIPPET_BYTES), retryAfterMs: parseRetryAfter(res.headers['retry-after'], deps.clock.now()) };
      if (res.statusCode < 200 || res.statusCode >= 300) break;
    }
    return result;
  }

  async function deliver(claim: DeliveryClaim, signal: AbortSignal): Promise<void> {
    const { member, counter } = claim;
    const target = resolveTarget(claim.targetKey, configured);
    if (!target) return await finish(claim, deadLetter(claim, target, `target ${claim.targetKey} is no longer configured`), 'dead');
    const format = deps.formats.get(target.format);
    if (!format) return await finish(claim, deadLetter(claim, target, `format ${target.format} is not known to this version`), 'dead');
    const host = originOf(target.url);
    const who = target.perRun ? `per-run ${host}` : target.key;
    if (claim.disabled) {
      return await finish(claim, deadLetter(claim, target, 'endpoint answered 410 Gone earlier; replay this dead letter to re-enable it'), 'gone');
    }
    if (target.perRun) {
      // The intake's URL rule only lets through what new URL() reads; state from an older
      // version may still hold a URL that does not parse, and that is refused here, once.
      const verdict = await deps.guard.check(target.url);
      if (!verdict.ok) {
        log.warn({ target: who, reason: verdict.reason }, 'per-run webhook URL refused');
        return await finish(claim, deadLetter(claim, target, `refused: ${verdict.reason}`), 'refused');
      }
    }
    const event = JSON.parse(claim.eventJson) as AnyEvent;
    const order = await inOrder(claim, event, format);
    if (order === 'obsolete') return await finish(claim, { kind: 'delivered', member, counter }, 'obsolete');
    if (order === 'wait') return await finish(claim, { kind: 'hand-back', member, counter, delayMs: STALL_ORDER_WAIT_MS * (1 + random()) }, 'deferred');
    let requests: RenderedRequest[];
    try {
      requests = format.render(event, target, { maxBodyBytes: config.maxBodyBytes, now: new Date(deps.clock.now()) });
    } catch (err) {
      // It would throw again on every retry.
      return await finish(claim, deadLetter(claim, target, `the ${target.format} format could not render this event: ${(err as Error).message}`), 'dead');
    }
    if (requests.length === 0) return await finish(claim, { kind: 'delivered', member, counter }, 'skipped');

    // A slow host may hold only its share of the slots; the rest wait in Redis.
    const busy = inFlight.get(host) ?? 0;
    if (busy >= perHostLimit) return await finish(claim, { kind: 'hand-back', member, counter, delayMs: DEFER_MS + random() * DEFER_MS * 3 }, 'deferred');
    inFlight.set(host, busy + 1);
    const attempt = claim.attempts + 1;
    const began = deps.clock.now();
    let result: AttemptResult;
    try {
      result = await send(requests, target, claim, signal);
    } catch (err) {
      if (signal.aborted) return await settle(claim, { kind: 'hand-back', member, counter, delayMs: 0 });
      result = { status: undefined, detail: (err as Error).message, retryAfterMs: undefined };
    } finally {
      const n = (inFlight.get(host) ?? 1) - 1;
      if (n <= 0) inFlight.delete(host);
      else inFlight.set(host, n);
      deps.metrics.deliveryDuration.observe((deps.clock.now() - began) / 1000);
    }
    const { status, detail } = result;

    if (status !== undefined && status >= 200 && status < 300) {
      log.debug({ target: who, event_id: claim.eventId, status, attempt }, 'webhook delivered');
      report(target, event, 'ok', result);
      // Alertmanager resolves an alert that is not re-sent: a stall's goes again while it lasts.
      if (event.type === 'run.stalled' && format.repeatsStalled) return await finish(claim, { kind: 'again', member, counter, delayMs: target.repeatMs }, 'delivered');
      return await finish(claim, { kind: 'delivered', member, counter }, 'delivered');
    }
    const last = { last_status: status ?? null, last_response: detail };
    if (status === 410) {
      log.warn({ target: who }, 'webhook endpoint answered 410 Gone; no more deliveries to it');
      report(target, event, 'gone', result);
      return await finish(claim, { ...deadLetter(claim, target, 'endpoint answered 410 Gone', last), disableTarget: true }, 'gone');
    }
    const next = config.scheduleMs[attempt];
    if (next === undefined) {
      log.warn({ target: who, event_id: claim.eventId, status, attempts: attempt }, 'webhook delivery exhausted its retries; dead-lettered');
      report(target, event, 'dead', result);
      return await finish(claim, deadLetter({ ...claim, attempts: attempt }, target, `no 2xx after ${attempt} attempts`, last), 'dead');
    }
    let delay = jittered(next);
    if (status !== undefined && RESPECT_RETRY_AFTER.has(status) && result.retryAfterMs !== undefined) {
      delay = Math.max(delay, Math.min(result.retryAfterMs, config.retryAfterCapMs));
    }
    log.info({ target: who, event_id: claim.eventId, status: status ?? null, error: status === undefined ? detail : undefined, attempt, retry_in_ms: delay }, 'webhook attempt failed; will retry');
    report(target, event, 'failed', result);
    return await finish(claim, { kind: 'retry', member, counter, delayMs: delay, attempts: attempt }, 'retry');
  }

  const claims = claimAcrossPartitions<DeliveryClaim>({
    partitions: deps.partitions,
    clock: deps.clock,
    async claimOne(p, limit) {
      const r = await deps.outbox.claim(p, limit, config.leaseMs);
      return { items: r.claims, now: r.now, nextDue: r.nextDue };
    },
    onPartitionError: (p, err) => deps.health.report(`webhook claims of partition ${p}`, err),
    onPartitionOk: (p) => deps.health.recovered(`webhook claims of partition ${p}`),
  });

  const loop = makeWorkLoop<DeliveryClaim>({
    name: 'webhook deliveries',
    concurrency: config.concurrency,
    claimBatch: config.concurrency * 2,
    clock: deps.clock,
    log,
    claim: (limit) => claims.claim(limit),
    process: deliver,
    handBack: (claim) => settle(claim, { kind: 'hand-back', member: claim.member, counter: claim.counter, delayMs: 0 }),
    async renew(items) {
      const byPartition = new Map<number, DeliveryClaim[]>();
      for (const claim of items) byPartition.set(claim.partition, [...(byPartition.get(claim.partition) ?? []), claim]);
      await Promise.all([...byPartition].map(([p, list]) => deps.outbox.renew(p, list, config.leaseMs)));
    },
    renewEveryMs: Math.floor(config.leaseMs / 3),
    onClaimError: (err) => deps.health.report('webhook claims', err),
    onClaimOk: () => deps.health.recovered('webhook claims'),
  });
  return {
    start: () => loop.start(),
    wake() {
      claims.invalidate();
      loop.wake();
    },
    async stop(graceMs) {
      await loop.stop(graceMs);
      await Promise.all(settlers.map((s) => s.drain()));
      await Promise.allSettled([...reporting]);
      if (!deps.dispatcher) await trusted.close();
    },
    get lastBeat() {
      return loop.lastBeat;
    },
  };
}
