import type { Redis } from 'ioredis';
import { makeOutbox, type ReplayItem } from './outbox.ts';
import type { Keys } from './schedule.ts';

/**
 * The dead-letter list (P:dead): entries are JSON {kind, reason, at, entry}, newest first.
 * kind "intake": a rejected intake entry (entry = the raw text, cut at 1 KiB);
 * kind "run": a run the API refused as malformed (entry = the intake entry or run ID);
 * kind "delivery": a webhook that never got a 2xx (entry = {target, attempts, last_status,
 * last_response, event}). Replay puts a delivery back in the outbox and the others back on
 * the intake list; both are atomic per entry (LREM first), so two replays act once.
 */
export interface DeadLetter {
  index: number;
  raw: string;
  kind: string;
  reason: string;
  at: string;
  entry: unknown;
  /** True when the stored entry was cut and cannot be replayed as it was. */
  truncated: boolean;
}

export function parseDead(raw: string, index: number): DeadLetter {
  try {
    const d = JSON.parse(raw) as { kind?: unknown; reason?: unknown; at?: unknown; entry?: unknown; entry_bytes?: unknown };
    const truncated = typeof d.entry === 'string' && typeof d.entry_bytes === 'number' && Buffer.byteLength(d.entry) < d.entry_bytes;
    return { index, raw, kind: String(d.kind ?? 'unknown'), reason: String(d.reason ?? ''), at: String(d.at ?? ''), entry: d.entry, truncated };
  } catch {
    return { index, raw, kind: 'unknown', reason: 'unreadable dead letter', at: '', entry: raw, truncated: true };
  }
}

export async function listDead(redis: Redis, keys: Keys, limit = 1000): Promise<DeadLetter[]> {
  const raws = await redis.lrange(keys.dead, 0, limit - 1);
  return raws.map(parseDead);
}

export interface DeadFilter {
  all?: boolean;
  indexes?: readonly number[];
  /** ISO time: entries dead-lettered at or after it. */
  since?: string;
  /** ISO time: entries dead-lettered before it (purge). */
  before?: string;
}

export function selectDead(list: readonly DeadLetter[], f: DeadFilter): DeadLetter[] {
  const since = f.since === undefined ? undefined : Date.parse(f.since);
  const before = f.before === undefined ? undefined : Date.parse(f.before);
  return list.filter(
    (d) =>
      f.all === true ||
      (f.indexes?.includes(d.index) ?? false) ||
      (since !== undefined && Date.parse(d.at) >= since) ||
      (before !== undefined && Date.parse(d.at) < before),
  );
}

function replayItem(d: DeadLetter): ReplayItem | undefined {
  if (d.kind === 'delivery') {
    const e = d.entry as { target?: unknown; event?: unknown } | null;
    if (typeof e?.target !== 'string' || typeof e.event !== 'object' || e.event === null) return undefined;
    return { raw: d.raw, action: 'delivery', payload: `${e.target}\n${JSON.stringify(e.event)}` };
  }
  if ((d.kind === 'intake' || d.kind === 'run') && typeof d.entry === 'string' && !d.truncated) {
    return { raw: d.raw, action: 'intake', payload: d.entry };
  }
  return undefined;
}

export interface ReplayResult {
  replayed: number;
  /** Entries that cannot be replayed (cut, unreadable), left in place. */
  skipped: DeadLetter[];
  /** Entries another process took first. */
  gone: number;
}

export async function replayDead(redis: Redis, prefix: string, keys: Keys, chosen: readonly DeadLetter[]): Promise<ReplayResult> {
  const items: ReplayItem[] = [];
  const skipped: DeadLetter[] = [];
  for (const d of chosen) {
    const item = replayItem(d);
    if (item) items.push(item);
    else skipped.push(d);
  }
  const done = await makeOutbox(redis, prefix, keys).replay(items);
  const replayed = done.filter(Boolean).length;
  return { replayed, skipped, gone: items.length - replayed };
}

export async function purgeDead(redis: Redis, keys: Keys, chosen: readonly DeadLetter[]): Promise<number> {
  if (chosen.length === 0) return 0;
  const pipe = redis.pipeline();
  for (const d of chosen) pipe.lrem(keys.dead, 1, d.raw);
  const r = await pipe.exec();
  return (r ?? []).filter(([err, n]) => !err && n === 1).length;
}
