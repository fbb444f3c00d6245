import { createHash } from 'node:crypto';
import type { EventType } from './classify.ts';
import type { Run } from './letta-client.ts';

/** The envelope every sink carries (contract: README "Events"). */
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
    watch: { enqueued_at: string; detected_at: string; polls: number };
  };
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
      watch: { enqueued_at: new Date(i.enqueuedAt).toISOString(), detected_at: detected, polls: i.polls },
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
