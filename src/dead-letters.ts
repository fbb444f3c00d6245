import { partitionIndex } from './redis/keys.ts';
import { partition, type StoreContext } from './redis/context.ts';
import { limitArgs, routeOf, type IntakeLimits } from './intake/store.ts';

/**
 * The dead letters: JSON {kind, reason, at, entry}, newest first, one list per partition
 * (P:dead with one partition).
 *   kind "intake": a rejected intake entry (entry = its text, cut at 1 KiB; built by
 *     lua/includes/dead_letter.lua);
 *   kind "run": a run the API refused as malformed (entry = the intake entry or run ID);
 *   kind "delivery": a webhook that never got a 2xx (entry = {target, format, attempts,
 *     last_status, last_response, event}).
 * They are read as bytes and removed by their exact bytes, so a letter holding bytes that are
 * not UTF-8 (written by an older version) can still be replayed or purged.
 */
export interface DeadLetter {
  partition: number;
  /** Position across every partition's list (partition 0 first, newest first): --index N. */
  index: number;
  /** Exactly as stored. */
  raw: Buffer;
  kind: string;
  reason: string;
  at: string;
  entry: unknown;
  /** True when the stored entry was cut and cannot be replayed as it was. */
  truncated: boolean;
}

/** The dead letter of a run the API refused. */
export function runDeadLetter(reason: string, at: Date, entry: string): string {
  return JSON.stringify({ kind: 'run', reason, at: at.toISOString(), entry });
}

/** The dead letter of a delivery that will not be tried again. */
export function deliveryDeadLetter(reason: string, at: Date, entry: { target: string; format: string | null; attempts: number; event: unknown } & Record<string, unknown>): string {
  return JSON.stringify({ kind: 'delivery', reason, at: at.toISOString(), entry });
}

export function parseDeadLetter(raw: Buffer, partitionIndexOf: number, index: number): DeadLetter {
  try {
    const d = JSON.parse(raw.toString('utf8')) as { kind?: unknown; reason?: unknown; at?: unknown; entry?: unknown; entry_bytes?: unknown; truncated?: unknown };
    // Older letters say nothing of a cut; their entry is shorter than the bytes it had.
    const truncated = d.truncated === true || (d.truncated === undefined && typeof d.entry === 'string' && typeof d.entry_bytes === 'number' && Buffer.byteLength(d.entry) < d.entry_bytes);
    return { partition: partitionIndexOf, index, raw, kind: String(d.kind ?? 'unknown'), reason: String(d.reason ?? ''), at: String(d.at ?? ''), entry: d.entry, truncated };
  } catch {
    return { partition: partitionIndexOf, index, raw, kind: 'unknown', reason: 'unreadable dead letter', at: '', entry: raw.toString('utf8'), truncated: true };
  }
}

export async function listDeadLetters(ctx: StoreContext, limit = 1000): Promise<DeadLetter[]> {
  const out: DeadLetter[] = [];
  for (const p of ctx.layout.partitions) {
    if (out.length >= limit) break;
    const raws = await ctx.client.lrangeBuffer(p.dead, 0, limit - out.length - 1);
    for (const raw of raws) out.push(parseDeadLetter(raw, p.index, out.length));
  }
  return out;
}

export interface DeadFilter {
  all?: boolean;
  indexes?: readonly number[];
  /** Epoch ms: letters dead-lettered at or after it. */
  since?: number;
  /** Epoch ms: letters dead-lettered before it. */
  before?: number;
}

export function selectDeadLetters(list: readonly DeadLetter[], f: DeadFilter): DeadLetter[] {
  return list.filter((d) => {
    const at = Date.parse(d.at);
    return (
      f.all === true ||
      (f.indexes?.includes(d.index) ?? false) ||
      (f.since !== undefined && at >= f.since) ||
      (f.before !== undefined && at < f.before)
    );
  });
}

export interface ReplayResult {
  replayed: number;
  /** Letters that cannot be replayed (cut, unreadable), left in place. */
  skipped: DeadLetter[];
  /** Letters another process took first. */
  gone: number;
}

type ReplayItem = { letter: DeadLetter; action: 'delivery'; target: string; eventId: string; eventJson: string } | { letter: DeadLetter; action: 'intake'; entry: string };

function replayItem(d: DeadLetter): ReplayItem | undefined {
  if (d.kind === 'delivery') {
    const e = d.entry as { target?: unknown; event?: { id?: unknown } } | null;
    if (typeof e?.target !== 'string' || typeof e.event !== 'object' || e.event === null || typeof e.event.id !== 'string') return undefined;
    return { letter: d, action: 'delivery', target: e.target, eventId: e.event.id, eventJson: JSON.stringify(e.event) };
  }
  if ((d.kind === 'intake' || d.kind === 'run') && typeof d.entry === 'string' && !d.truncated) return { letter: d, action: 'intake', entry: d.entry };
  return undefined;
}

/** Letters per replay call: each LREM walks the list, so a call stays short. */
const REPLAY_CHUNK = 100;

export async function replayDeadLetters(ctx: StoreContext, limits: IntakeLimits, chosen: readonly DeadLetter[]): Promise<ReplayResult> {
  const n = ctx.layout.partitions.length;
  const byPartition = new Map<number, ReplayItem[]>();
  const elsewhere: (ReplayItem & { action: 'intake' })[] = [];
  const skipped: DeadLetter[] = [];
  for (const d of chosen) {
    const item = replayItem(d);
    if (!item) skipped.push(d);
    else if (item.action === 'intake' && partitionIndex(routeOf(item.entry), n) !== d.partition) elsewhere.push(item);
    else byPartition.set(d.partition, [...(byPartition.get(d.partition) ?? []), item]);
  }
  let replayed = 0;
  let tried = 0;
  for (const [index, items] of byPartition) {
    const p = partition(ctx, index);
    for (let i = 0; i < items.length; i += REPLAY_CHUNK) {
      const args: (string | number | Buffer)[] = [...limitArgs(limits), new Date().toISOString()];
      for (const it of items.slice(i, i + REPLAY_CHUNK)) {
        if (it.action === 'delivery') args.push('delivery', it.letter.raw, it.target, it.eventId, it.eventJson);
        else args.push('intake', it.letter.raw, it.entry, '', '');
      }
      const r = (await ctx.scripts.run('dead-replay', [p.dead, p.webhooks, p.attempts, p.payloads, p.disabled, p.due, p.runs, p.entries], args)) as number[];
      tried += r.length;
      replayed += r.filter((v) => v === 1).length;
    }
  }
  // An intake entry whose run belongs to another partition (N > 1) goes back on the intake
  // list: pushed first, then removed, so a crash between the two repeats it rather than loses it.
  for (const it of elsewhere) {
    tried++;
    await ctx.client.lpush(ctx.layout.intake, it.entry);
    if ((await ctx.client.lrem(partition(ctx, it.letter.partition).dead, 1, it.letter.raw)) === 1) replayed++;
  }
  return { replayed, skipped, gone: tried - replayed };
}

export async function purgeDeadLetters(ctx: StoreContext, chosen: readonly DeadLetter[]): Promise<number> {
  let purged = 0;
  for (const p of ctx.layout.partitions) {
    const mine = chosen.filter((d) => d.partition === p.index);
    if (mine.length === 0) continue;
    const pipe = ctx.client.pipeline();
    for (const d of mine) pipe.lrem(p.dead, 1, d.raw);
    const r = await pipe.exec();
    purged += (r ?? []).filter(([err, n]) => !err && n === 1).length;
  }
  return purged;
}
