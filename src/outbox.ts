import type { Redis } from 'ioredis';
import { randomUUID } from 'node:crypto';
import { LAST_CLAIM, script, type Keys } from './schedule.ts';

/**
 * The webhook outbox: one member per (event, target) in P:outbox, scored by the next attempt
 * time, and the event itself in P:evt:<id> until its last delivery ends. Deliveries are
 * claimed with a lease and a fencing counter exactly like polls (see schedule.ts), so a
 * delivery whose worker died is retried after its lease, with the same webhook-id.
 */

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/**
 * KEYS: outbox, disabled, last-claim key. ARGV: prefix, limit, lease ms, claim id. Returns now,
 * then member/token/attempts/disabled/event JSON per delivery. A re-sent claim (same id)
 * returns the same deliveries; see LAST_CLAIM in schedule.ts.
 */
const CLAIM = `${NOW}${LAST_CLAIM}
local prefix, limit, lease, claim_id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {now}
local function emit(m, ek, target, token, ev)
  out[#out + 1] = m
  out[#out + 1] = token
  out[#out + 1] = redis.call('HGET', ek, 'a:' .. target) or '0'
  out[#out + 1] = redis.call('SISMEMBER', KEYS[2], target)
  out[#out + 1] = ev
end
local function split(m)
  local sep = string.find(m, '\\n', 1, true)
  return prefix .. ':evt:' .. string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
end
local again = replayed(KEYS[3], claim_id)
if again then
  for _, m in ipairs(again) do
    local ek, target = split(m)
    local ev = redis.call('HGET', ek, 'ev')
    local token = redis.call('HGET', ek, 'c:' .. target)
    if ev and token then emit(m, ek, target, token, ev) end
  end
  return out
end
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local claimed = {}
for _, m in ipairs(members) do
  local ek, target = split(m)
  local ev = redis.call('HGET', ek, 'ev')
  if not ev then
    redis.call('ZREM', KEYS[1], m)
  else
    local token = redis.call('HINCRBY', ek, 'c:' .. target, 1)
    redis.call('ZADD', KEYS[1], now + lease, m)
    claimed[#claimed + 1] = m
    emit(m, ek, target, token, ev)
  end
end
if #claimed > 0 then remember(KEYS[3], claim_id, claimed, lease) end
return out
`;

/**
 * KEYS: outbox, dead, disabled. ARGV: prefix, then 5 values per op: kind, member, token, a, b.
 *   S  delivered (or given up): the delivery ends; the event goes when its last delivery ends
 *   F  failed, retry: a = delay ms, b = attempts made so far
 *   X  dead-letter: a = dead-letter JSON; b = '1' to disable the target (it answered 410)
 *   B  hand back untried: a = delay ms
 */
const SETTLE = `${NOW}
local prefix = ARGV[1]
local out = {}
local i = 2
while i + 4 <= #ARGV do
  local kind, m, token, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local sep = string.find(m, '\\n', 1, true)
  local ek = prefix .. ':evt:' .. string.sub(m, 1, sep - 1)
  local target = string.sub(m, sep + 1)
  local ok = 0
  local score = redis.call('ZSCORE', KEYS[1], m)
  if score and tonumber(score) >= now and redis.call('HGET', ek, 'c:' .. target) == token then
    ok = 1
    if kind == 'F' then
      redis.call('ZADD', KEYS[1], now + tonumber(a), m)
      redis.call('HSET', ek, 'a:' .. target, b)
    elseif kind == 'B' then
      redis.call('ZADD', KEYS[1], now + tonumber(a), m)
    else
      if kind == 'X' then
        redis.call('LPUSH', KEYS[2], a)
        if b == '1' then redis.call('SADD', KEYS[3], target) end
      end
      redis.call('ZREM', KEYS[1], m)
      redis.call('HDEL', ek, 'a:' .. target, 'c:' .. target)
      if redis.call('HINCRBY', ek, 'n', -1) <= 0 then redis.call('DEL', ek) end
    end
  end
  out[#out + 1] = ok
end
return out
`;

/**
 * KEYS: dead, outbox, intake, disabled. ARGV: prefix, then triples: the exact dead-letter
 * string, what to do ('delivery' | 'intake' | 'drop'), and the payload (event JSON + target
 * for a delivery as "<target>\\n<event JSON>", the raw entry for intake). LREM first, so two
 * concurrent replays of one entry act once.
 */
const REPLAY = `${NOW}
local prefix = ARGV[1]
local out = {}
local i = 2
while i + 2 <= #ARGV do
  local raw, action, payload = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local removed = redis.call('LREM', KEYS[1], 1, raw)
  if removed == 1 then
    if action == 'delivery' then
      local sep = string.find(payload, '\\n', 1, true)
      local target = string.sub(payload, 1, sep - 1)
      local ev = string.sub(payload, sep + 1)
      local id = cjson.decode(ev).id
      local ek = prefix .. ':evt:' .. id
      local m = id .. '\\n' .. target
      if redis.call('ZSCORE', KEYS[2], m) == false then
        redis.call('HSET', ek, 'ev', ev)
        redis.call('HINCRBY', ek, 'n', 1)
        redis.call('ZADD', KEYS[2], now, m)
      end
      redis.call('SREM', KEYS[4], target)
    elseif action == 'intake' then
      redis.call('LPUSH', KEYS[3], payload)
    end
  end
  out[#out + 1] = removed
end
return out
`;

const claimScript = script(CLAIM);
const settleScript = script(SETTLE);
const replayScript = script(REPLAY);

export interface DeliveryClaim {
  member: string;
  eventId: string;
  target: string;
  token: string;
  attempts: number;
  /** The target answered 410 Gone earlier: deliveries to it go straight to P:dead. */
  disabled: boolean;
  eventJson: string;
}

export type DeliveryOp =
  | { kind: 'S'; member: string; token: string }
  | { kind: 'F'; member: string; token: string; delayMs: number; attempts: number }
  | { kind: 'X'; member: string; token: string; deadJson: string; disable: boolean }
  | { kind: 'B'; member: string; token: string; delayMs: number };

export interface ReplayItem {
  raw: string;
  action: 'delivery' | 'intake' | 'drop';
  payload: string;
}

export interface Outbox {
  claim(limit: number, leaseMs: number): Promise<{ now: number; claims: DeliveryClaim[] }>;
  settle(ops: readonly DeliveryOp[]): Promise<boolean[]>;
  replay(items: readonly ReplayItem[]): Promise<boolean[]>;
}

export function makeOutbox(redis: Redis, prefix: string, keys: Keys, replica: string = randomUUID()): Outbox {
  const lastClaim = keys.lastClaim('delivery', replica);
  let claimCount = 0;
  return {
    async claim(limit, leaseMs) {
      const r = (await claimScript(redis, [keys.outbox, keys.disabled, lastClaim], [prefix, limit, leaseMs, String(++claimCount)])) as (string | number)[];
      const claims: DeliveryClaim[] = [];
      for (let i = 1; i + 4 < r.length; i += 5) {
        const member = String(r[i]);
        const sep = member.indexOf('\n');
        claims.push({
          member,
          eventId: member.slice(0, sep),
          target: member.slice(sep + 1),
          token: String(r[i + 1]),
          attempts: Number(r[i + 2]),
          disabled: Number(r[i + 3]) === 1,
          eventJson: String(r[i + 4]),
        });
      }
      return { now: Number(r[0]), claims };
    },
    async settle(ops) {
      if (ops.length === 0) return [];
      const args: (string | number)[] = [prefix];
      for (const op of ops) {
        if (op.kind === 'S') args.push('S', op.member, op.token, '', '');
        else if (op.kind === 'F') args.push('F', op.member, op.token, Math.round(op.delayMs), op.attempts);
        else if (op.kind === 'X') args.push('X', op.member, op.token, op.deadJson, op.disable ? '1' : '');
        else args.push('B', op.member, op.token, Math.round(op.delayMs), '');
      }
      const r = (await settleScript(redis, [keys.outbox, keys.dead, keys.disabled], args)) as number[];
      return r.map((v) => v === 1);
    },
    async replay(items) {
      if (items.length === 0) return [];
      const args: string[] = [prefix];
      for (const it of items) args.push(it.raw, it.action, it.payload);
      const r = (await replayScript(redis, [keys.dead, keys.outbox, keys.intake, keys.disabled], args)) as number[];
      return r.map((v) => v === 1);
    },
  };
}
