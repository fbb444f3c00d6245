import { createHash, randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/**
 * Redis layout and the Lua scripts that move a run through it. P is the key prefix.
 *
 *   P:intake           LIST   producers LPUSH; we take from the right (FIFO)
 *   P:schedule         ZSET   run id -> next poll time (ms, Redis clock)
 *   P:run:<id>         HASH   e enqueued ms, d deadline ms, p polls, c claim counter (fence),
 *                             r the raw JSON entry (for metadata), w per-run webhook targets,
 *                             \n-joined, each "u:<url>" (event format) or "l:<url>" (Letta format)
 *   P:events           STREAM one entry per event, field `event`
 *   P:outbox           ZSET   "<event id>\n<target>" -> next delivery attempt time; a target is
 *                             "g:<name>" (configured) or "u:<url>" / "l:<url>" (per run)
 *   P:evt:<event id>   HASH   ev the event JSON, n deliveries left, a:<target> attempts made,
 *                             c:<target> claim counter (fence), s:<target> last failure
 *   P:disabled         SET    delivery targets that answered 410 Gone
 *   P:claim:<kind>:<replica> STRING a replica's last claim, for replaying a lost reply
 *   P:dead             LIST   rejected intake entries, exhausted deliveries
 *
 * Leases: a claim pushes a run's score out by the lease and bumps its claim counter `c`. The
 * token a claim returns is "<counter>:<lease end ms>", and it is the fence: settling a run
 * (reschedule or commit) is refused unless `c` still equals the counter and the lease end has
 * not passed. So a replica that stalled past its lease cannot commit, even before another
 * replica re-claims the run, and a run whose replica died comes due again on its own when the
 * lease runs out.
 *
 * Cost: each redis.call in a script costs about a microsecond, most of Redis's share of a
 * poll, so the hot path is kept to three per poll (HMGET + HSET at the claim, HGET at the
 * settle) plus its share of one ZADD per batch. That is why `p` (polls) is counted at the
 * claim, in the same HSET as the counter, and given back by a reschedule of a run that was
 * not polled (handed back at shutdown, waiting out a 401 pause). A claim whose replica died
 * before settling stays counted: its request may well have been made.
 *
 * Every script reads the time from Redis (TIME), not from the replica, so replicas with
 * skewed clocks still agree on what is due. Keys built inside scripts all share the prefix;
 * on Redis Cluster, a prefix with a hash tag ({letta-watch}) keeps them in one slot.
 */

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

/** One ZADD per 500 members (Lua's unpack has a stack limit) instead of one per member. */
const ZADD_ALL = `
local function zadd_all(key, pairs)
  for j = 1, #pairs, 1000 do
    redis.call('ZADD', key, unpack(pairs, j, math.min(j + 999, #pairs)))
  end
end
`;

/** KEYS: intake, schedule, dead. ARGV: prefix, batch, default max watch ms, max entry bytes, max watch cap, now ISO. */
const INTAKE = `${NOW}
local prefix, batch, def_max, max_bytes, max_cap, at = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local accepted, duplicates, rejected, taken = 0, 0, 0, 0
local function valid_id(s)
  return type(s) == 'string' and #s <= 128 and string.find(s, '^[%w][%w_%-]*$') ~= nil
end
local function valid_url(s)
  return type(s) == 'string' and #s <= 2048 and string.find(s, '^[hH][tT][tT][pP][sS]?://[^%s/?#]+') ~= nil and string.find(s, '[%c%s]') == nil
end
local function reject(raw, reason)
  local entry = raw
  if #entry > 1024 then entry = string.sub(entry, 1, 1024) end
  redis.call('LPUSH', KEYS[3], cjson.encode({kind = 'intake', reason = reason, at = at, entry = entry, entry_bytes = #raw}))
  rejected = rejected + 1
end
local function present(v) return v ~= nil and v ~= cjson.null end
for _ = 1, batch do
  local raw = redis.call('RPOP', KEYS[1])
  if not raw then break end
  taken = taken + 1
  local id, url, max_watch, keep
  if #raw > max_bytes then
    reject(raw, 'entry is ' .. #raw .. ' bytes, more than the limit of ' .. max_bytes)
  else
    local s = string.match(raw, '^%s*(.-)%s*$')
    if string.sub(s, 1, 1) == '{' then
      -- Redis's cjson also reads NaN, Infinity and hex numbers, which are not JSON; turn that
      -- off for this decode only (the setting is global to Redis's Lua state).
      local lenient = cjson.decode_invalid_numbers()
      cjson.decode_invalid_numbers(false)
      local ok, obj = pcall(cjson.decode, s)
      cjson.decode_invalid_numbers(lenient)
      if not ok or type(obj) ~= 'table' then
        reject(raw, 'not valid JSON')
      elseif not valid_id(obj.run_id) then
        reject(raw, 'run_id is missing or not a valid run ID (^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$)')
      elseif present(obj.webhook_url) and present(obj.callback_url) and obj.webhook_url ~= obj.callback_url then
        reject(raw, 'webhook_url and callback_url name different URLs')
      elseif present(obj.webhook_url) and not valid_url(obj.webhook_url) then
        reject(raw, 'webhook_url is not an http(s) URL')
      elseif present(obj.callback_url) and not valid_url(obj.callback_url) then
        reject(raw, 'callback_url is not an http(s) URL')
      -- cjson decodes [] and {} alike; the text tells an empty array apart.
      elseif present(obj.metadata) and (type(obj.metadata) ~= 'table' or obj.metadata[1] ~= nil
          or (next(obj.metadata) == nil and string.find(s, '"metadata"%s*:%s*%[') ~= nil)) then
        reject(raw, 'metadata is not a JSON object')
      elseif present(obj.max_watch_ms) and (type(obj.max_watch_ms) ~= 'number' or obj.max_watch_ms < 1 or obj.max_watch_ms > max_cap or obj.max_watch_ms % 1 ~= 0) then
        reject(raw, 'max_watch_ms is not a whole number of milliseconds from 1 to ' .. max_cap)
      else
        id = obj.run_id
        -- A callback_url target gets Letta's callback body, so its receiver works unchanged.
        if present(obj.webhook_url) then url = 'u:' .. obj.webhook_url elseif present(obj.callback_url) then url = 'l:' .. obj.callback_url end
        if present(obj.max_watch_ms) then max_watch = obj.max_watch_ms end
        if present(obj.metadata) then keep = s end
      end
    elseif valid_id(s) then
      id = s
    else
      reject(raw, 'not a valid run ID (^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$) nor a JSON object')
    end
  end
  if id then
    local key = prefix .. ':run:' .. id
    if redis.call('EXISTS', key) == 1 then
      duplicates = duplicates + 1
      if url then
        local w = redis.call('HGET', key, 'w')
        if not w then
          redis.call('HSET', key, 'w', url)
        elseif string.find('\\n' .. w .. '\\n', '\\n' .. url .. '\\n', 1, true) == nil then
          redis.call('HSET', key, 'w', w .. '\\n' .. url)
        end
      end
    else
      redis.call('HSET', key, 'e', now, 'd', now + (max_watch or def_max), 'p', 0, 'c', 0)
      if keep then redis.call('HSET', key, 'r', keep) end
      if url then redis.call('HSET', key, 'w', url) end
      redis.call('ZADD', KEYS[2], now, id)
      accepted = accepted + 1
    end
  end
end
return {taken, accepted, duplicates, rejected}
`;

/**
 * Replaying a lost claim. ioredis re-sends a command whose reply was lost when the connection
 * dropped; a claim that ran but whose reply never arrived would then claim *other* runs and
 * leave the first ones stranded until their lease ran out. So each replica keeps its last
 * claim under P:claim:<replica> (one key per replica, overwritten each time, gone after a
 * lease): a claim arriving with the same claim id returns the same items instead of new ones.
 * Items are joined with \r, which neither run IDs nor outbox members (URLs are checked for
 * control characters at intake) can contain.
 */
export const LAST_CLAIM = `
local function replayed(key, claim_id)
  local last = redis.call('GET', key)
  if not last then return nil end
  local items = {}
  for part in string.gmatch(last, '[^\\r]+') do items[#items + 1] = part end
  if items[1] ~= claim_id then return nil end
  table.remove(items, 1)
  return items
end
local function remember(key, claim_id, items, lease)
  redis.call('SET', key, claim_id .. '\\r' .. table.concat(items, '\\r'), 'PX', lease)
end
`;

/**
 * KEYS: schedule, last-claim key. ARGV: prefix, limit, lease ms, claim id. Returns now, next
 * due, lease end, then per run: id, claim counter, enqueued, deadline, polls before this claim.
 * The replay record holds the claim id, the lease end, then the ids.
 */
const CLAIM = `${NOW}${ZADD_ALL}${LAST_CLAIM}
local prefix, limit, lease, claim_id = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local out = {now, -1, now + lease}
local function emit(id, token, e, d, polls)
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = e
  out[#out + 1] = d
  out[#out + 1] = polls
end
local again = replayed(KEYS[2], claim_id)
if again then
  out[3] = table.remove(again, 1)
  for _, id in ipairs(again) do
    local f = redis.call('HMGET', prefix .. ':run:' .. id, 'e', 'd', 'p', 'c')
    if f[1] then emit(id, f[4], f[1], f[2], (tonumber(f[3]) or 1) - 1) end
  end
  return out
end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local until_ms = now + lease
local claimed, moved = {until_ms}, {}
for _, id in ipairs(ids) do
  local key = prefix .. ':run:' .. id
  local f = redis.call('HMGET', key, 'e', 'd', 'p', 'c')
  if not f[1] then
    redis.call('ZREM', KEYS[1], id)
  else
    local polls = tonumber(f[3]) or 0
    local token = (tonumber(f[4]) or 0) + 1
    redis.call('HSET', key, 'c', token, 'p', polls + 1)
    claimed[#claimed + 1] = id
    emit(id, token, f[1], f[2], polls)
    moved[#moved + 1] = until_ms
    moved[#moved + 1] = id
  end
end
if #moved > 0 then
  zadd_all(KEYS[1], moved)
  remember(KEYS[2], claim_id, claimed, lease)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[2] = tonumber(first[2]) end
return out
`;

/**
 * KEYS: schedule, events, dead, outbox. ARGV: prefix, stream max length, delay of the first
 * delivery attempt (ms), number of global targets G, G target names, then 6 values per op:
 * kind, run id, claim counter, lease end, a, b.
 *   R  reschedule: a = delay ms, b = 1 if the run was polled, 0 if not (gives back the poll
 *      the claim counted)
 *   C  commit:     a = event JSON, b = event id. Appends the event, records one delivery per
 *                  global target and per-run URL, and drops the run: all or nothing.
 *   D  dead-letter the run: a = dead-letter JSON
 * Returns one 1 (done) or 0 (fenced: the lease was lost) per op.
 */
const SETTLE = `${NOW}${ZADD_ALL}
local prefix, maxlen, first, g = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out, moved = {}, {}
local i = 5 + g
while i + 5 <= #ARGV do
  local kind, id, counter, lease_end, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]) or 0, ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  local key = prefix .. ':run:' .. id
  local ok = 0
  if lease_end >= now and redis.call('HGET', key, 'c') == counter then
    ok = 1
    if kind == 'R' then
      -- One ZADD for the whole batch, after the loop: a batch never holds two ops for one run
      -- (a run is claimed again only after its previous settle has been applied).
      moved[#moved + 1] = now + tonumber(a)
      moved[#moved + 1] = id
      if b == '0' then redis.call('HINCRBY', key, 'p', -1) end
    elseif kind == 'C' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', a)
      local n = 0
      for t = 5, 4 + g do
        redis.call('ZADD', KEYS[4], now + first, b .. '\\n' .. ARGV[t])
        n = n + 1
      end
      local w = redis.call('HGET', key, 'w')
      if w then
        for target in string.gmatch(w, '[^\\n]+') do
          redis.call('ZADD', KEYS[4], now + first, b .. '\\n' .. target)
          n = n + 1
        end
      end
      if n > 0 then
        local ek = prefix .. ':evt:' .. b
        redis.call('HSET', ek, 'ev', a)
        redis.call('HINCRBY', ek, 'n', n)
      end
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], id)
    elseif kind == 'D' then
      redis.call('LPUSH', KEYS[3], a)
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[1], id)
    end
  end
  out[#out + 1] = ok
end
zadd_all(KEYS[1], moved)
return out
`;

export type Script = (redis: Redis, keys: string[], args: (string | number)[]) => Promise<unknown>;

/** EVALSHA with a fallback to EVAL when Redis lost its script cache (restart, failover). */
export function script(source: string): Script {
  const sha = createHash('sha1').update(source).digest('hex');
  return async (redis, keys, args) => {
    try {
      return await redis.evalsha(sha, keys.length, ...keys, ...args);
    } catch (err) {
      if (!String((err as Error).message).startsWith('NOSCRIPT')) throw err;
      return await redis.eval(source, keys.length, ...keys, ...args);
    }
  };
}

const intakeScript = script(INTAKE);
const claimScript = script(CLAIM);
const settleScript = script(SETTLE);

export interface Keys {
  intake: string;
  /** A replica's last claim (see LAST_CLAIM); `kind` separates polls from deliveries. */
  lastClaim(kind: 'poll' | 'delivery', replica: string): string;
  schedule: string;
  events: string;
  dead: string;
  outbox: string;
  disabled: string;
  run(id: string): string;
  event(eventId: string): string;
}

export function keysFor(prefix: string): Keys {
  return {
    intake: `${prefix}:intake`,
    lastClaim: (kind, replica) => `${prefix}:claim:${kind}:${replica}`,
    schedule: `${prefix}:schedule`,
    events: `${prefix}:events`,
    dead: `${prefix}:dead`,
    outbox: `${prefix}:outbox`,
    disabled: `${prefix}:disabled`,
    run: (id) => `${prefix}:run:${id}`,
    event: (eventId) => `${prefix}:evt:${eventId}`,
  };
}

export interface IntakeResult {
  taken: number;
  accepted: number;
  duplicates: number;
  rejected: number;
}

export interface Claim {
  runId: string;
  token: string;
  enqueuedAt: number;
  deadline: number;
  /** Polls made before this claim. */
  polls: number;
}

export interface ClaimResult {
  /** Redis time of the claim. */
  now: number;
  /** Score of the earliest run left in the schedule, or undefined when it is empty. */
  nextDue: number | undefined;
  claims: Claim[];
}

export type SettleOp =
  /** `polled`: a request was made for this claim (else the claim's counted poll is given back). */
  | { kind: 'R'; runId: string; token: string; delayMs: number; polled: boolean }
  | { kind: 'C'; runId: string; token: string; eventJson: string; eventId: string }
  | { kind: 'D'; runId: string; token: string; deadJson: string };

export interface IntakeLimits {
  batch: number;
  defaultMaxWatchMs: number;
  maxEntryBytes: number;
  maxWatchCapMs: number;
}

export interface Schedule {
  readonly keys: Keys;
  intake(limits: IntakeLimits, nowIso: string): Promise<IntakeResult>;
  /** Claims due runs; `claimId` must be new for each call of this replica (see LAST_CLAIM). */
  claim(limit: number, leaseMs: number, claimId?: string): Promise<ClaimResult>;
  /** Applies many ops in one round trip; true per op that held its lease. */
  settle(ops: readonly SettleOp[], globalTargets: readonly string[], firstDeliveryMs?: number): Promise<boolean[]>;
  /** The raw JSON intake entry of a watched run (null for bare IDs). */
  entryOf(runId: string): Promise<string | null>;
}

export function makeSchedule(redis: Redis, prefix: string, streamMaxLen: number, replica: string = randomUUID()): Schedule {
  const keys = keysFor(prefix);
  const lastClaim = keys.lastClaim('poll', replica);
  let claims = 0;
  return {
    keys,
    async intake(l, nowIso) {
      const r = (await intakeScript(redis, [keys.intake, keys.schedule, keys.dead], [
        prefix, l.batch, l.defaultMaxWatchMs, l.maxEntryBytes, l.maxWatchCapMs, nowIso,
      ])) as number[];
      return { taken: r[0] ?? 0, accepted: r[1] ?? 0, duplicates: r[2] ?? 0, rejected: r[3] ?? 0 };
    },
    async claim(limit, leaseMs, claimId = String(++claims)) {
      const r = (await claimScript(redis, [keys.schedule, lastClaim], [prefix, limit, leaseMs, claimId])) as (string | number)[];
      const claims: Claim[] = [];
      // The token carries the lease end, so a settle checks the lease without reading the score.
      const leaseEnd = String(r[2]);
      for (let i = 3; i + 4 < r.length; i += 5) {
        claims.push({
          runId: String(r[i]),
          token: `${r[i + 1]}:${leaseEnd}`,
          enqueuedAt: Number(r[i + 2]),
          deadline: Number(r[i + 3]),
          polls: Number(r[i + 4]),
        });
      }
      const next = Number(r[1]);
      return { now: Number(r[0]), nextDue: next >= 0 ? next : undefined, claims };
    },
    async settle(ops, globalTargets, firstDeliveryMs = 0) {
      if (ops.length === 0) return [];
      const args: (string | number)[] = [prefix, streamMaxLen, firstDeliveryMs, globalTargets.length, ...globalTargets];
      for (const op of ops) {
        // A token that is not "<counter>:<lease end>" matches no run and is refused.
        const colon = op.token.indexOf(':');
        const counter = colon > 0 ? op.token.slice(0, colon) : '-';
        const leaseEnd = colon > 0 ? op.token.slice(colon + 1) : '0';
        if (op.kind === 'R') args.push('R', op.runId, counter, leaseEnd, op.delayMs, op.polled ? 1 : 0);
        else if (op.kind === 'C') args.push('C', op.runId, counter, leaseEnd, op.eventJson, op.eventId);
        else args.push('D', op.runId, counter, leaseEnd, op.deadJson, '');
      }
      const r = (await settleScript(redis, [keys.schedule, keys.events, keys.dead, keys.outbox], args)) as number[];
      return r.map((v) => v === 1);
    },
    async entryOf(runId) {
      return await redis.hget(keys.run(runId), 'r');
    },
  };
}
