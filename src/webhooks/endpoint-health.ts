import { randomUUID } from 'node:crypto';
import { OPS_EVENT_TYPES, type OpsEventType } from '../events/event.ts';
import { num, partition, type StoreContext } from '../redis/context.ts';

/**
 * Delivery health per endpoint and the operator events it raises (lua/endpoint-health.lua).
 * Partition 0 holds the health records, the ops stream (B:ops) and the deliveries of operator
 * events, so one script raises an event and records where it goes.
 */
export interface HealthReport {
  /** The endpoint as operator events name it: a configured target's name, or "(per-run)". */
  name: string;
  /** Its target key: an endpoint gets no operator event about itself. */
  selfKey: string;
  outcome: 'ok' | 'failed' | 'gone' | 'dead';
  status: number | undefined;
  detail: string;
  /** delivery.dead: the event whose delivery died; undefined raises none (operator events). */
  eventId: string | undefined;
}

export interface RaisedEvent {
  type: OpsEventType;
  target: string;
  id: string;
}

export interface EndpointHealthOptions {
  failingAfter: number;
  gapMs: number;
  firstDeliveryMs: number;
  /** The target keys subscribed to each operator event type. */
  subscribers: Readonly<Record<OpsEventType, readonly string[]>>;
}

export interface EndpointHealth {
  /** `at`: the time raised events carry. `recorded`: deliveries of them recorded in partition 0. */
  report(reports: readonly HealthReport[], at: Date): Promise<{ raised: RaisedEvent[]; recorded: number }>;
}

const OUTCOME_CODES = { ok: 'S', failed: 'F', gone: 'G', dead: 'X' } as const;
/** The ops stream is kept near this length (operator events are few). */
export const OPS_STREAM_MAXLEN = 10_000;
/** A detail longer than this is cut: it comes from an endpoint's response. */
const DETAIL_CHARS = 512;

export function makeEndpointHealth(ctx: StoreContext, o: EndpointHealthOptions): EndpointHealth {
  const p = partition(ctx, 0);
  // In OPS_EVENT_TYPES order: the script's ARGV[7..10].
  const subscribed = OPS_EVENT_TYPES.map((t) => o.subscribers[t].join('\n'));
  return {
    async report(reports, at) {
      if (reports.length === 0) return { raised: [], recorded: 0 };
      const args: (string | number)[] = [o.failingAfter, o.gapMs, o.firstDeliveryMs, OPS_STREAM_MAXLEN, at.toISOString(), randomUUID(), ...subscribed];
      for (const r of reports) args.push(r.name, r.selfKey, OUTCOME_CODES[r.outcome], r.status ?? '', r.detail.slice(0, DETAIL_CHARS), r.eventId ?? '');
      const out = (await ctx.scripts.run('endpoint-health', [p.endpoints, p.ops, p.webhooks, p.attempts, p.payloads], args)) as unknown[];
      const raised: RaisedEvent[] = [];
      for (let i = 1; i + 2 < out.length; i += 3) raised.push({ type: out[i] as OpsEventType, target: String(out[i + 1]), id: String(out[i + 2]) });
      return { raised, recorded: num(out[0]) };
    },
  };
}
