import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { Webhook } from 'standardwebhooks';
import { Agent, request, type Dispatcher } from 'undici';
import { makeBatcher, type Batcher } from '../batcher.ts';
import { parseRetryAfter } from '../classify.ts';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import { lettaCallbackBody, type WatchEvent } from '../events.ts';
import type { Metrics } from '../metrics.ts';
import type { RedisHealth } from '../redis/health.ts';
import { decodeTarget, encodeTarget } from '../redis/keys.ts';
import { deliveryDeadLetter } from '../store/dead-letters.ts';
import type { DeliveryClaim, DeliverySettle, Outbox } from '../store/outbox.ts';
import type { UrlGuard } from '../webhook-guard.ts';
import { claimAcrossPartitions, makeWorkLoop, type WorkLoop } from '../work-loop.ts';

/**
 * Webhook delivery from the durable outbox: signed (Standard Webhooks), retried on a jittered
 * schedule held in Redis, dead-lettered after the last attempt. A slow host (an origin,
 * however many URLs it has) holds at most a quarter of the delivery slots, and nothing here is
 * on the poll path.
 */
export interface WebhookTarget {
  /** The outbox's name for it (keys.ts encodeTarget). */
  key: string;
  url: string;
  format: 'event' | 'letta';
  headers: Readonly<Record<string, string>>;
  perRun: boolean;
}

export function configuredTargets(w: Config['webhooks']): WebhookTarget[] {
  const byKey = new Map<string, WebhookTarget>();
  const list = [...w.urls.map((url) => ({ url, name: undefined, format: 'event' as const, headers: {} })), ...w.targets];
  for (const t of list) {
    const name = t.name ?? createHash('sha256').update(t.url).digest('hex').slice(0, 12);
    const key = encodeTarget({ kind: 'configured', name });
    if (!byKey.has(key)) byKey.set(key, { key, url: t.url, format: t.format, headers: t.headers, perRun: false });
  }
  return [...byKey.values()];
}

function targetFor(key: string, configured: ReadonlyMap<string, WebhookTarget>): WebhookTarget | undefined {
  const ref = decodeTarget(key);
  if (ref === undefined) return undefined;
  if (ref.kind === 'configured') return configured.get(key);
  return { key, url: ref.url, format: ref.format, headers: {}, perRun: true };
}

/** The host a target is counted under for the slot cap: its origin, or the raw text if it does not parse. */
function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

/** Bulky Run fields dropped first when a body is over the size cap. */
const BULKY_RUN_FIELDS = ['request_config', 'metadata', 'callback_error'];

/** The request body for a target; over `maxBytes`, bulky parts go and `data.truncated` says which. */
export function renderBody(event: WatchEvent, format: 'event' | 'letta', maxBytes: number): string {
  if (format === 'letta') {
    // Letta's shape has no room for a note; an oversized body loses its metadata.
    const body = JSON.stringify(lettaCallbackBody(event));
    return Buffer.byteLength(body) <= maxBytes ? body : JSON.stringify({ ...lettaCallbackBody(event), metadata: null });
  }
  let body = JSON.stringify(event);
  if (Buffer.byteLength(body) <= maxBytes) return body;
  const dropped: string[] = [];
  const run = event.data.run ? { ...event.data.run } : null;
  if (run) {
    for (const f of BULKY_RUN_FIELDS) {
      const fields = run as Record<string, unknown>;
      if (fields[f] == null) continue;
      delete fields[f];
      dropped.push(`run.${f}`);
    }
  }
  let data: Record<string, unknown> = { ...event.data, run, truncated: dropped };
  body = JSON.stringify({ ...event, data });
  if (Buffer.byteLength(body) > maxBytes) {
    // Still too big: keep the identifying fields of the run only, then drop the metadata.
    const slim = run ? { id: run.id, agent_id: run.agent_id, status: run.status, stop_reason: run.stop_reason, completed_at: run.completed_at } : null;
    dropped.push('run.*', 'metadata');
    data = { ...event.data, run: slim, metadata: null, truncated: dropped };
    body = JSON.stringify({ ...event, data });
  }
  return body;
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

/** Settle round trips: as batch.ts says; deliveries are few next to polls, so no gap. */
const SETTLE_BATCH = 256;
/** A delivery deferred because its host is at its cap waits this long, plus up to as long again. */
const DEFER_MS = 250;
/** Bytes of a failed response kept in the dead letter. */
const RESPONSE_SNIPPET_BYTES = 512;

export function makeDeliveryWorker(d: DeliveryDeps): WorkLoop {
  const c = d.config;
  const random = d.random ?? Math.random;
  const configured = new Map(configuredTargets(c).map((t) => [t.key, t]));
  const signers = d.secrets.map((s) => new Webhook(s));
  const perHostLimit = Math.max(1, Math.ceil(c.concurrency / 4));
  /** Attempts in flight per origin. */
  const inFlight = new Map<string, number>();
  const settlers: Batcher<DeliverySettle, boolean>[] = Array.from({ length: d.partitions }, (_, p) =>
    makeBatcher((ops) => d.outbox.settle(p, ops), { maxBatch: SETTLE_BATCH }),
  );
  const log = d.log;
  // Configured targets are the operator's and may well be on a private network: they go
  // through a plain agent. Per-run targets go through the guard's agent, which re-checks
  // addresses when it connects.
  const trusted = d.dispatcher ?? new Agent({ keepAliveTimeout: 10_000 });

  function jittered(ms: number): number {
    return Math.round(ms * (1 + c.jitter * (2 * random() - 1)));
  }

  async function settle(claim: DeliveryClaim, op: DeliverySettle): Promise<void> {
    await (settlers[claim.partition] as Batcher<DeliverySettle, boolean>).add(op);
    if (op.kind === 'retry' || op.kind === 'hand-back') {
      // The loop may be asleep until a due time it read before this delivery was put back.
      claims.dueIn(claim.partition, op.delayMs);
      loop.wake();
    }
  }

  async function finish(claim: DeliveryClaim, op: DeliverySettle, outcome: string): Promise<void> {
    d.metrics.deliveries.inc({ outcome });
    if (op.kind === 'dead-letter') d.metrics.deadLetters.inc({ kind: 'delivery' });
    await settle(claim, op);
  }

  function deadLetter(claim: DeliveryClaim, target: WebhookTarget | undefined, reason: string, extra: Record<string, unknown> = {}): DeliverySettle & { kind: 'dead-letter' } {
    const letter = deliveryDeadLetter(reason, new Date(d.clock.now()), {
      target: claim.targetKey,
      format: target?.format ?? null,
      attempts: claim.attempts,
      ...extra,
      event: JSON.parse(claim.eventJson) as unknown,
    });
    return { kind: 'dead-letter', member: claim.member, counter: claim.counter, deadLetterJson: letter, disableTarget: false };
  }

  async function deliver(claim: DeliveryClaim, signal: AbortSignal): Promise<void> {
    const { member, counter } = claim;
    const target = targetFor(claim.targetKey, configured);
    if (!target) return await finish(claim, deadLetter(claim, target, `target ${claim.targetKey} is no longer configured`), 'dead');
    const host = originOf(target.url);
    const who = target.perRun ? `per-run ${host}` : target.key;
    if (claim.disabled) {
      return await finish(claim, deadLetter(claim, target, 'endpoint answered 410 Gone earlier; replay this dead letter to re-enable it'), 'gone');
    }
    if (target.perRun) {
      // The intake's URL rule only lets through what new URL() reads; state from an older
      // version may still hold a URL that does not parse, and that is refused here, once.
      const verdict = await d.guard.check(target.url);
      if (!verdict.ok) {
        log.warn({ target: who, reason: verdict.reason }, 'per-run webhook URL refused');
        return await finish(claim, deadLetter(claim, target, `refused: ${verdict.reason}`), 'refused');
      }
    }
    // A slow host may hold only its share of the slots; the rest wait in Redis.
    const busy = inFlight.get(host) ?? 0;
    if (busy >= perHostLimit) return await finish(claim, { kind: 'hand-back', member, counter, delayMs: DEFER_MS + random() * DEFER_MS * 3 }, 'deferred');
    inFlight.set(host, busy + 1);
    const attempt = claim.attempts + 1;
    const began = d.clock.now();
    let status: number | undefined;
    let detail: string;
    let retryAfterMs: number | undefined;
    try {
      const body = renderBody(JSON.parse(claim.eventJson) as WatchEvent, target.format, c.maxBodyBytes);
      const headers = {
        ...target.headers,
        'content-type': 'application/json',
        'user-agent': 'letta-run-watcher',
        ...signatureHeaders(claim.eventId, new Date(d.clock.now()), body, signers),
      };
      const timeout = AbortSignal.timeout(c.attemptTimeoutMs);
      const res = await request(target.url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.any([signal, timeout]),
        dispatcher: target.perRun ? d.guard.dispatcher : trusted,
      });
      status = res.statusCode;
      detail = await readSnippet(res.body, RESPONSE_SNIPPET_BYTES);
      retryAfterMs = parseRetryAfter(res.headers['retry-after'], d.clock.now());
    } catch (err) {
      if (signal.aborted) return await settle(claim, { kind: 'hand-back', member, counter, delayMs: 0 });
      detail = (err as Error).message;
    } finally {
      const n = (inFlight.get(host) ?? 1) - 1;
      if (n <= 0) inFlight.delete(host);
      else inFlight.set(host, n);
      d.metrics.deliveryDuration.observe((d.clock.now() - began) / 1000);
    }

    if (status !== undefined && status >= 200 && status < 300) {
      log.debug({ target: who, event_id: claim.eventId, status, attempt }, 'webhook delivered');
      return await finish(claim, { kind: 'delivered', member, counter }, 'delivered');
    }
    const last = { last_status: status ?? null, last_response: detail };
    if (status === 410) {
      log.warn({ target: who }, 'webhook endpoint answered 410 Gone; no more deliveries to it');
      return await finish(claim, { ...deadLetter(claim, target, 'endpoint answered 410 Gone', last), disableTarget: true }, 'gone');
    }
    const next = c.scheduleMs[attempt];
    if (next === undefined) {
      log.warn({ target: who, event_id: claim.eventId, status, attempts: attempt }, 'webhook delivery exhausted its retries; dead-lettered');
      return await finish(claim, deadLetter({ ...claim, attempts: attempt }, target, `no 2xx after ${attempt} attempts`, last), 'dead');
    }
    let delay = jittered(next);
    if (status !== undefined && RESPECT_RETRY_AFTER.has(status) && retryAfterMs !== undefined) {
      delay = Math.max(delay, Math.min(retryAfterMs, c.retryAfterCapMs));
    }
    log.info({ target: who, event_id: claim.eventId, status: status ?? null, error: status === undefined ? detail : undefined, attempt, retry_in_ms: delay }, 'webhook attempt failed; will retry');
    return await finish(claim, { kind: 'retry', member, counter, delayMs: delay, attempts: attempt }, 'retry');
  }

  const claims = claimAcrossPartitions<DeliveryClaim>({
    partitions: d.partitions,
    clock: d.clock,
    async claimOne(p, limit) {
      const r = await d.outbox.claim(p, limit, c.leaseMs);
      return { items: r.claims, now: r.now, nextDue: r.nextDue };
    },
    onPartitionError: (p, err) => d.health.report(`webhook claims of partition ${p}`, err),
    onPartitionOk: (p) => d.health.recovered(`webhook claims of partition ${p}`),
  });

  const loop = makeWorkLoop<DeliveryClaim>({
    name: 'webhook deliveries',
    concurrency: c.concurrency,
    claimBatch: c.concurrency * 2,
    clock: d.clock,
    log,
    claim: (limit) => claims.claim(limit),
    process: deliver,
    handBack: (claim) => settle(claim, { kind: 'hand-back', member: claim.member, counter: claim.counter, delayMs: 0 }),
    async renew(items) {
      const byPartition = new Map<number, DeliveryClaim[]>();
      for (const claim of items) byPartition.set(claim.partition, [...(byPartition.get(claim.partition) ?? []), claim]);
      await Promise.all([...byPartition].map(([p, list]) => d.outbox.renew(p, list, c.leaseMs)));
    },
    renewEveryMs: Math.floor(c.leaseMs / 3),
    onClaimError: (err) => d.health.report('webhook claims', err),
    onClaimOk: () => d.health.recovered('webhook claims'),
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
      if (!d.dispatcher) await trusted.close();
    },
    get held() {
      return loop.held;
    },
    get lastBeat() {
      return loop.lastBeat;
    },
  };
}
