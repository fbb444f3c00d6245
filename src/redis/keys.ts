import { createHash } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';

/**
 * The Redis key layout, and the one place that builds a key name or reads a member encoding
 * (delivery members and webhook target keys). P is the key prefix.
 *
 * Producers and consumers use three keys, whatever the deployment:
 *   P:intake                LIST    producers LPUSH; the watcher takes from the right (FIFO)
 *   P:events                STREAM  one entry per event (with N partitions: one per partition)
 *   P:dead                  LIST    dead letters (with N partitions: one per partition)
 *
 * The watch state lives in partitions. With one partition (the default) its keys sit under P
 * itself, so on Redis Cluster a prefix with a hash tag ({letta-watch}) keeps them and the intake
 * list in one slot. With N > 1 each partition's keys carry a hash tag of their own, chosen so
 * the N tags fall in N equal ranges of the slot space (a cluster gives each master contiguous
 * ranges), and B below is `P:{tag}`:
 *   B:due                   ZSET    run id -> next poll time (or lease end), ms on Redis's clock
 *   B:runs                  HASH    run id -> packed record (lua/includes/run_record.lua)
 *   B:created               ZSET    run id -> its created_at (ms), once a poll has seen it
 *   B:entries               HASH    run id -> the raw JSON intake entry, for its metadata
 *   B:events                STREAM  (N = 1: P:events)
 *   B:dead                  LIST    (N = 1: P:dead)
 *   B:webhooks              ZSET    delivery member -> next attempt time (or lease end)
 *   B:attempts              HASH    delivery member -> "<attempts>:<claim counter>"
 *   B:payloads              HASH    event id -> event JSON; "<event id>#n" -> deliveries left
 *   B:disabled              SET     target keys that answered 410 Gone
 *   B:retry:<hash>          ZSET    a target's deliveries waiting out a failure -> due time
 *   B:moved                 ZSET    intake move ids already applied (N > 1), -> time applied
 *   B:ops                   STREAM  operator events (endpoint.*, delivery.dead); partition 0's only
 *   B:endpoints             HASH    target name -> delivery health (lua/endpoint-health.lua); partition 0's only
 *   B:lastclaim:<kind>:<replica> STRING a replica's last claim, replayed if its reply was lost
 *   B:probe                 STRING  readiness writes here to prove the master takes writes
 * With N > 1, entries move from P:intake into their partition through a per-replica processing
 * list in the intake's slot ({P:intake}:processing:<replica>, see intake/store.ts).
 *
 * Global: P:meta (HASH: layout version, partition count), P:api-budget (the fleet's token
 * bucket), P:reconcile-lease (who fetches the list of active runs), and the legacy v0.1 keys
 * read only to migrate them (P:schedule, P:run:<id>, P:outbox, P:evt:<id>).
 */

export const SLOTS = 16384;

export interface PartitionKeys {
  readonly index: number;
  readonly due: string;
  readonly runs: string;
  readonly created: string;
  readonly entries: string;
  readonly events: string;
  readonly dead: string;
  readonly webhooks: string;
  readonly attempts: string;
  readonly payloads: string;
  readonly disabled: string;
  /** The deliveries of a target waiting out a failure (lua/delivery-settle.lua). */
  retryIndex(targetKey: string): string;
  readonly moved: string;
  readonly ops: string;
  readonly endpoints: string;
  readonly probe: string;
  lastClaim(kind: 'poll' | 'delivery', replica: string): string;
}

export interface LegacyKeys {
  readonly schedule: string;
  readonly outbox: string;
  run(id: string): string;
  event(eventId: string): string;
}

export interface Layout {
  readonly prefix: string;
  readonly intake: string;
  /** A replica's processing list for moving entries into partitions (N > 1). */
  intakeProcessing(replica: string): string;
  /** The batch id of a replica's processing list. */
  intakeBatch(replica: string): string;
  /** Replica liveness for the intake move, scored by expiry (same slot as the intake list). */
  readonly intakeReplicas: string;
  readonly intakeProbe: string;
  readonly meta: string;
  /** The fleet's API token bucket (lua/budget.lua). */
  readonly apiBudget: string;
  /** Held by the one replica fetching the list of active runs (reconciliation). */
  readonly reconcileLease: string;
  readonly partitions: readonly PartitionKeys[];
  partitionOf(runId: string): PartitionKeys;
  readonly legacy: LegacyKeys;
}

/** The hash tag Redis Cluster would use for `key`, or undefined (the whole key is hashed). */
export function hashTagOf(key: string): string | undefined {
  const open = key.indexOf('{');
  if (open < 0) return undefined;
  const close = key.indexOf('}', open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : undefined;
}

/**
 * The tag of partition `i` of `n`: the first `p<i>.<k>` whose slot lies in the i-th of n equal
 * ranges of the slot space. Stable for a given n, so every replica computes the same names.
 */
export function partitionTag(i: number, n: number): string {
  const lo = Math.floor((i * SLOTS) / n);
  const hi = Math.floor(((i + 1) * SLOTS) / n);
  for (let k = 0; ; k++) {
    const tag = `p${i}.${k}`;
    const slot = calculateSlot(tag);
    if (slot >= lo && slot < hi) return tag;
  }
}

/**
 * A run's partition: a polynomial hash of its ID's bytes modulo 2^31 - 1, modulo the count.
 * Exact in doubles, so intake.lua computes the same number to check where an entry landed.
 */
export function partitionIndex(runId: string, n: number): number {
  if (n === 1) return 0;
  let h = 0;
  for (const byte of Buffer.from(runId, 'utf8')) h = (h * 31 + byte) % 2147483647;
  return h % n;
}

function partitionKeys(prefix: string, index: number, n: number): PartitionKeys {
  const tag = n === 1 ? undefined : partitionTag(index, n);
  const base = tag === undefined ? prefix : `${prefix}:{${tag}}`;
  return {
    index,
    due: `${base}:due`,
    runs: `${base}:runs`,
    created: `${base}:created`,
    entries: `${base}:entries`,
    events: `${base}:events`,
    dead: `${base}:dead`,
    webhooks: `${base}:webhooks`,
    attempts: `${base}:attempts`,
    payloads: `${base}:payloads`,
    disabled: `${base}:disabled`,
    retryIndex: (targetKey) => `${base}:retry:${createHash('sha1').update(targetKey).digest('hex').slice(0, 16)}`,
    moved: `${base}:moved`,
    ops: `${base}:ops`,
    endpoints: `${base}:endpoints`,
    probe: `${base}:probe`,
    lastClaim: (kind, replica) => `${base}:lastclaim:${kind}:${replica}`,
  };
}

export function layoutFor(prefix: string, partitions = 1): Layout {
  if (!Number.isInteger(partitions) || partitions < 1) throw new RangeError(`partitions must be a positive integer, got ${partitions}`);
  const intake = `${prefix}:intake`;
  // Keys in the intake's slot: the intake key is hashed whole unless it has a tag of its own.
  const intakeSlot = hashTagOf(intake) === undefined ? `{${intake}}` : intake;
  const list = Array.from({ length: partitions }, (_, i) => partitionKeys(prefix, i, partitions));
  return {
    prefix,
    intake,
    intakeProcessing: (replica) => `${intakeSlot}:processing:${replica}`,
    intakeBatch: (replica) => `${intakeSlot}:batch:${replica}`,
    intakeReplicas: `${intakeSlot}:replicas`,
    intakeProbe: `${intakeSlot}:probe`,
    meta: `${prefix}:meta`,
    apiBudget: `${prefix}:api-budget`,
    reconcileLease: `${prefix}:reconcile-lease`,
    partitions: list,
    partitionOf: (runId) => list[partitionIndex(runId, partitions)] as PartitionKeys,
    legacy: {
      schedule: `${prefix}:schedule`,
      outbox: `${prefix}:outbox`,
      run: (id) => `${prefix}:run:${id}`,
      event: (eventId) => `${prefix}:evt:${eventId}`,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Webhook targets and delivery members: how they are spelt in Redis.

/**
 * A delivery target as stored: a configured target by name, or a per-run URL with the format
 * its intake field asked for (`webhook_url`: the event; `callback_url`: Letta's callback body).
 */
export type TargetRef =
  | { kind: 'configured'; name: string }
  | { kind: 'run-url'; url: string; format: 'event' | 'letta' };

const TARGET_CODES = { configured: 'g:', event: 'u:', letta: 'l:' } as const;

export function encodeTarget(t: TargetRef): string {
  return t.kind === 'configured' ? `${TARGET_CODES.configured}${t.name}` : `${TARGET_CODES[t.format]}${t.url}`;
}

/** The target a stored key names, or undefined when it is not one we write. */
export function decodeTarget(key: string): TargetRef | undefined {
  const code = key.slice(0, 2);
  const rest = key.slice(2);
  if (rest === '') return undefined;
  if (code === TARGET_CODES.configured) return { kind: 'configured', name: rest };
  if (code === TARGET_CODES.event) return { kind: 'run-url', url: rest, format: 'event' };
  if (code === TARGET_CODES.letta) return { kind: 'run-url', url: rest, format: 'letta' };
  return undefined;
}

/** A delivery is one member of B:webhooks: the event id and the target key, \n-joined. */
export function deliveryMember(eventId: string, targetKey: string): string {
  return `${eventId}\n${targetKey}`;
}

export function parseDeliveryMember(member: string): { eventId: string; targetKey: string } {
  const sep = member.indexOf('\n');
  return sep < 0 ? { eventId: member, targetKey: '' } : { eventId: member.slice(0, sep), targetKey: member.slice(sep + 1) };
}
