import { createHash } from 'node:crypto';
import type { Run } from '../letta/client.ts';

/**
 * Event types. Run events: a run ended (completed, failed, cancelled), the API has never heard
 * of it (not_found), the watch gave up (expired), or it is still going after
 * WATCHER_STALLED_AFTER_MS (stalled: once, and the terminal event still follows). Operator
 * events say how webhook delivery goes (an endpoint failing, recovered, disabled by a 410, a
 * delivery dead-lettered); they are not about one run.
 */
export const RUN_EVENT_TYPES = ['run.completed', 'run.failed', 'run.cancelled', 'run.not_found', 'run.expired', 'run.stalled'] as const;
export type EventType = (typeof RUN_EVENT_TYPES)[number];
export const OPS_EVENT_TYPES = ['endpoint.failing', 'endpoint.recovered', 'endpoint.disabled', 'delivery.dead'] as const;
export type OpsEventType = (typeof OPS_EVENT_TYPES)[number];

/** The envelope every sink carries (contract: docs/events.md). */
export interface WatchEvent {
  id: string;
  type: EventType;
  timestamp: string;
  data: {
    run_id: string;
    agent_id: string | null;
    status: string | null;
    stop_reason: string | null;
    run: Run | null;
    metadata: Record<string, unknown> | null;
    /** stalled_at: when the run was found stalled (run.stalled, and its terminal event after). */
    watch: { enqueued_at: string; detected_at: string; polls: number; stalled_at: string | null };
  };
}

/** An operator event: how delivery to one endpoint goes. `target` names it without its URL's secrets. */
export interface OpsEvent {
  id: string;
  type: OpsEventType;
  timestamp: string;
  data: {
    target: string;
    consecutive_failures: number;
    last_status: number | null;
    detail: string;
    /** delivery.dead: the event whose delivery died. */
    event_id: string | null;
    /** Events of this kind about this endpoint held back by the rate limit since the last one. */
    suppressed: number;
  };
}

export type AnyEvent = WatchEvent | OpsEvent;

export function isRunEvent(e: AnyEvent): e is WatchEvent {
  return e.type.startsWith('run.');
}

/** Same run and type give the same id in every sink and every replica, so receivers can dedupe. */
export function eventId(runId: string, type: EventType): string {
  return `evt_${createHash('sha256').update(`${runId}\n${type}`).digest('hex').slice(0, 32)}`;
}

export interface EventInput {
  type: EventType;
  runId: string;
  run: Run | null;
  metadata: Record<string, unknown> | null;
  enqueuedAt: number;
  detectedAt: number;
  polls: number;
  /** When the run was found stalled, if it was. */
  stalledAt?: number | undefined;
}

export function buildEvent(i: EventInput): WatchEvent {
  const detected = new Date(i.detectedAt).toISOString();
  return {
    id: eventId(i.runId, i.type),
    type: i.type,
    timestamp: detected,
    data: {
      run_id: i.runId,
      agent_id: i.run?.agent_id ?? null,
      status: i.run?.status ?? null,
      stop_reason: i.run?.stop_reason ?? null,
      run: i.run,
      metadata: i.metadata,
      watch: {
        enqueued_at: new Date(i.enqueuedAt).toISOString(),
        detected_at: detected,
        polls: i.polls,
        stalled_at: i.stalledAt === undefined ? null : new Date(i.stalledAt).toISOString(),
      },
    },
  };
}

/** The body Letta's own callback POSTs, for receivers built against it (format `letta`). */
export function lettaCallbackBody(e: WatchEvent): { run_id: string; status: string | null; completed_at: string | null; metadata: Record<string, unknown> | null } {
  return {
    run_id: e.data.run_id,
    status: e.data.status,
    completed_at: e.data.run?.completed_at ?? null,
    metadata: e.data.metadata,
  };
}
