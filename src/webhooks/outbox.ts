import { parseDeliveryMember } from '../redis/keys.ts';
import { num, partition, type StoreContext } from '../redis/context.ts';

/**
 * The webhook outbox: one member per (event, target) in B:webhooks, scored by the next
 * attempt time, and the event in B:payloads until its last delivery ends. Deliveries are
 * claimed with a lease and fenced exactly like polls (lua/delivery-claim.lua), so a delivery
 * whose worker died is retried after its lease, with the same webhook-id.
 */
export interface DeliveryClaim {
  member: string;
  partition: number;
  eventId: string;
  /** The stored target key (keys.ts: encodeTarget). */
  targetKey: string;
  counter: string;
  /** Attempts made before this one. */
  attempts: number;
  /** The target answered 410 Gone earlier: deliveries to it go straight to the dead letters. */
  disabled: boolean;
  eventJson: string;
}

export type DeliverySettle =
  | { kind: 'delivered'; member: string; counter: string }
  | { kind: 'retry'; member: string; counter: string; delayMs: number; attempts: number }
  | { kind: 'dead-letter'; member: string; counter: string; deadLetterJson: string; disableTarget: boolean }
  | { kind: 'hand-back'; member: string; counter: string; delayMs: number }
  /** Delivered, and to be sent again after delayMs (a stalled run's alert while it stays stalled). */
  | { kind: 'again'; member: string; counter: string; delayMs: number };

export interface Outbox {
  claim(partition: number, limit: number, leaseMs: number): Promise<{ now: number; nextDue: number | undefined; claims: DeliveryClaim[] }>;
  settle(partition: number, ops: readonly DeliverySettle[]): Promise<boolean[]>;
  renew(partition: number, deliveries: readonly { member: string; counter: string }[], leaseMs: number): Promise<boolean[]>;
  /** Makes held-back deliveries (redis.waitReplicas) due now; returns how many. */
  release(partition: number, members: readonly string[]): Promise<number>;
  /**
   * Order of a stalled run's messages to one target (lua/stall-order.lua): for 'stall',
   * whether the run is still watched; for 'end', whether no stall delivery to the target is
   * pending. True: send now.
   */
  stallOrder(partition: number, which: 'stall' | 'end', runId: string, stallMember: string, leaseMs: number): Promise<boolean>;
}

/** The one-letter op codes of delivery-settle.lua. */
const SETTLE_CODES = { delivered: 'S', retry: 'F', 'dead-letter': 'X', 'hand-back': 'B', again: 'A' } as const;
/**
 * When a target answers 2xx again, each success releases this many of its deliveries waiting
 * out a failure, this far apart: a recovered endpoint catches up within seconds, but gently.
 */
const RELEASE_PER_SUCCESS = 10;
const RELEASE_SPACING_MS = 20;
/** In an attempts record "<attempts>:<counter>", the counter is the second field (renew.lua). */
const DELIVERY_COUNTER_FIELD = 2;

/** `onReleased`: deliveries of a recovered target were made due now (wake the delivery loop). */
export function makeOutbox(ctx: StoreContext, onReleased?: (partition: number, count: number) => void): Outbox {
  let claims = 0;
  return {
    async claim(index, limit, leaseMs) {
      const p = partition(ctx, index);
      const r = (await ctx.scripts.run('delivery-claim', [p.webhooks, p.attempts, p.payloads, p.disabled, p.lastClaim('delivery', ctx.replica)], [
        limit, leaseMs, String(++claims),
      ])) as unknown[];
      const out: DeliveryClaim[] = [];
      for (let i = 2; i + 4 < r.length; i += 5) {
        const member = String(r[i]);
        const { eventId, targetKey } = parseDeliveryMember(member);
        out.push({
          member,
          partition: index,
          eventId,
          targetKey,
          counter: String(r[i + 1]),
          attempts: num(r[i + 2]),
          disabled: num(r[i + 3]) === 1,
          eventJson: String(r[i + 4]),
        });
      }
      const next = num(r[1]);
      return { now: num(r[0]), nextDue: next >= 0 ? next : undefined, claims: out };
    },
    async settle(index, ops) {
      if (ops.length === 0) return [];
      const p = partition(ctx, index);
      const keys = [p.webhooks, p.attempts, p.payloads, p.dead, p.disabled];
      // Each op names its target's retry index by its place in KEYS (1-based, as Lua counts).
      const place = new Map<string, number>();
      const retryKey = (member: string) => {
        const key = p.retryIndex(parseDeliveryMember(member).targetKey);
        let at = place.get(key);
        if (at === undefined) {
          keys.push(key);
          place.set(key, (at = keys.length));
        }
        return at;
      };
      const args: (string | number)[] = [RELEASE_PER_SUCCESS, RELEASE_SPACING_MS];
      for (const op of ops) {
        const code = SETTLE_CODES[op.kind];
        const r = retryKey(op.member);
        if (op.kind === 'delivered') args.push(code, op.member, op.counter, '', '', r);
        else if (op.kind === 'retry') args.push(code, op.member, op.counter, Math.max(0, Math.round(op.delayMs)), op.attempts, r);
        else if (op.kind === 'dead-letter') args.push(code, op.member, op.counter, op.deadLetterJson, op.disableTarget ? '1' : '', r);
        else args.push(code, op.member, op.counter, Math.max(0, Math.round(op.delayMs)), '', r);
      }
      const [results, released] = (await ctx.scripts.run('delivery-settle', keys, args)) as [number[], number];
      if (released > 0) onReleased?.(index, released);
      return results.map((v) => v === 1);
    },
    async renew(index, deliveries, leaseMs) {
      if (deliveries.length === 0) return [];
      const p = partition(ctx, index);
      const args: (string | number)[] = [leaseMs, DELIVERY_COUNTER_FIELD];
      for (const d of deliveries) args.push(d.member, d.counter);
      const r = (await ctx.scripts.run('renew', [p.webhooks, p.attempts], args)) as number[];
      return r.map((v) => v === 1);
    },
    async release(index, members) {
      if (members.length === 0) return 0;
      const p = partition(ctx, index);
      return num(await ctx.scripts.run('release', [p.webhooks, p.attempts], members));
    },
    async stallOrder(index, which, runId, stallMember, leaseMs) {
      const p = partition(ctx, index);
      return num(await ctx.scripts.run('stall-order', [p.webhooks, p.runs], [which, runId, stallMember, leaseMs])) === 1;
    },
  };
}
