import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { Webhook } from 'standardwebhooks';
import { Agent, request, type Dispatcher } from 'undici';
import { makeBatcher } from '../batcher.ts';
import { parseRetryAfter } from '../classify.ts';
import type { Clock } from '../clock.ts';
import type { Config } from '../config.ts';
import { lettaCallbackBody, type WatchEvent } from '../events.ts';
import type { Metrics } from '../metrics.ts';
import type { DeliveryClaim, DeliveryOp, Outbox } from '../outbox.ts';
import type { UrlGuard } from '../webhook-guard.ts';
import { makeWorkLoop, type WorkLoop } from '../work-loop.ts';

/**
 * Webhook delivery from the durable outbox: signed (Standard Webhooks), retried on a jittered
 * schedule held in Redis, dead-lettered after the last attempt. A slow endpoint holds at most
 * a quarter of the delivery slots, and nothing here is on the poll path.
 */
export interface WebhookTarget {
  /** The outbox's name for it: g:<name> (configured), u:<url> or l:<url> (per run). */
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
    const key = `g:${name}`;
    if (!byKey.has(key)) byKey.set(key, { key, url: t.url, format: t.format, headers: t.headers, perRun: false });
  }
  return [...byKey.values()];
}

function targetFor(key: string, configured: ReadonlyMap<string, WebhookTarget>): WebhookTarget | undefined {
  if (key.startsWith('g:')) return configured.get(key);
  if (key.startsWith('u:')) return { key, url: key.slice(2), format: 'event', headers: {}, perRun: true };
  if (key.startsWith('l:')) return { key, url: key.slice(2), format: 'letta', headers: {}, perRun: true };
  return undefined;
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

export function makeDeliveryWorker(d: DeliveryDeps): WorkLoop {
  const c = d.config;
  const random = d.random ?? Math.random;
  const configured = new Map(configuredTargets(c).map((t) => [t.key, t]));
  const signers = d.secrets.map((s) => new Webhook(s));
  const perTargetLimit = Math.max(1, Math.ceil(c.concurrency / 4));
  const inFlight = new Map<string, number>();
  const settle = makeBatcher<DeliveryOp, boolean>((ops) => d.outbox.settle(ops), 256);
  const log = d.log;
  // Configured targets are the operator's and may well be on a private network: they go
  // through a plain agent. Per-run targets go through the guard's agent, which re-checks
  // addresses when it connects.
  const trusted = d.dispatcher ?? new Agent({ keepAliveTimeout: 10_000 });

  function jittered(ms: number): number {
    return Math.round(ms * (1 + c.jitter * (2 * random() - 1)));
  }

  async function finish(op: DeliveryOp, outcome: string): Promise<void> {
    d.metrics.deliveries.inc({ outcome });
    if (op.kind === 'X') d.metrics.deadLetters.inc({ kind: 'delivery' });
    await settle.add(op);
  }

  function deadLetter(claim: DeliveryClaim, target: WebhookTarget | undefined, reason: string, extra: Record<string, unknown> = {}): string {
    return JSON.stringify({
      kind: 'delivery',
      reason,
      at: new Date(d.clock.now()).toISOString(),
      entry: { target: claim.target, format: target?.format ?? null, attempts: claim.attempts, ...extra, event: JSON.parse(claim.eventJson) as unknown },
    });
  }

  async function deliver(claim: DeliveryClaim, signal: AbortSignal): Promise<void> {
    const { member, token } = claim;
    const target = targetFor(claim.target, configured);
    if (!target) {
      return await finish({ kind: 'X', member, token, disable: false, deadJson: deadLetter(claim, target, `target ${claim.target} is no longer configured`) }, 'dead');
    }
    const who = target.perRun ? `per-run ${new URL(target.url).host}` : target.key;
    if (claim.disabled) {
      return await finish(
        { kind: 'X', member, token, disable: false, deadJson: deadLetter(claim, target, 'endpoint answered 410 Gone earlier; replay this dead letter to re-enable it') },
        'gone',
      );
    }
    if (target.perRun) {
      const verdict = await d.guard.check(target.url);
      if (!verdict.ok) {
        log.warn({ target: who, reason: verdict.reason }, 'per-run webhook URL refused');
        return await finish({ kind: 'X', member, token, disable: false, deadJson: deadLetter(claim, target, `refused: ${verdict.reason}`) }, 'refused');
      }
    }
    // A slow endpoint may hold only its share of the slots; the rest wait in Redis.
    const busy = inFlight.get(target.url) ?? 0;
    if (busy >= perTargetLimit) return await finish({ kind: 'B', member, token, delayMs: 250 + random() * 750 }, 'deferred');
    inFlight.set(target.url, busy + 1);
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
      detail = await readSnippet(res.body, 512);
      retryAfterMs = parseRetryAfter(res.headers['retry-after'], d.clock.now());
    } catch (err) {
      if (signal.aborted) return await settle.add({ kind: 'B', member, token, delayMs: 0 }).then(() => undefined);
      detail = (err as Error).message;
    } finally {
      const n = (inFlight.get(target.url) ?? 1) - 1;
      if (n <= 0) inFlight.delete(target.url);
      else inFlight.set(target.url, n);
      d.metrics.deliveryDuration.observe((d.clock.now() - began) / 1000);
    }

    if (status !== undefined && status >= 200 && status < 300) {
      log.debug({ target: who, event_id: claim.eventId, status, attempt }, 'webhook delivered');
      return await finish({ kind: 'S', member, token }, 'delivered');
    }
    const last = { last_status: status ?? null, last_response: detail };
    if (status === 410) {
      log.warn({ target: who }, 'webhook endpoint answered 410 Gone; no more deliveries to it');
      return await finish({ kind: 'X', member, token, disable: true, deadJson: deadLetter(claim, target, 'endpoint answered 410 Gone', last) }, 'gone');
    }
    const next = c.scheduleMs[attempt];
    if (next === undefined) {
      log.warn({ target: who, event_id: claim.eventId, status, attempts: attempt }, 'webhook delivery exhausted its retries; dead-lettered');
      return await finish(
        { kind: 'X', member, token, disable: false, deadJson: deadLetter({ ...claim, attempts: attempt }, target, `no 2xx after ${attempt} attempts`, last) },
        'dead',
      );
    }
    let delay = jittered(next);
    if (status !== undefined && RESPECT_RETRY_AFTER.has(status) && retryAfterMs !== undefined) {
      delay = Math.max(delay, Math.min(retryAfterMs, c.retryAfterCapMs));
    }
    log.info({ target: who, event_id: claim.eventId, status: status ?? null, error: status === undefined ? detail : undefined, attempt, retry_in_ms: delay }, 'webhook attempt failed; will retry');
    return await finish({ kind: 'F', member, token, delayMs: delay, attempts: attempt }, 'retry');
  }

  const loop = makeWorkLoop<DeliveryClaim>({
    name: 'webhook deliveries',
    concurrency: c.concurrency,
    claimBatch: c.concurrency * 2,
    clock: d.clock,
    log,
    async claim(limit) {
      const r = await d.outbox.claim(limit, c.leaseMs);
      return { items: r.claims, idleMs: 250 };
    },
    process: deliver,
    handBack: async (claim) => {
      await settle.add({ kind: 'B', member: claim.member, token: claim.token, delayMs: 0 });
    },
  });
  return {
    start: () => loop.start(),
    wake: () => loop.wake(),
    async stop(graceMs) {
      await loop.stop(graceMs);
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
