--[[ Claims due webhook deliveries of one partition with a lease, exactly like claim.lua does
  runs: the due score becomes the lease end and the delivery's claim counter goes up.
  Input:
    KEYS[1] webhooks   KEYS[2] attempts   KEYS[3] payloads   KEYS[4] disabled
    KEYS[5] this replica's last-claim key
    ARGV[1] most deliveries   ARGV[2] lease ms   ARGV[3] claim id
  Output: {now, next due score or -1, then per delivery: member, counter, attempts made,
    1 if its target answered 410 earlier else 0, event JSON}
  Keys: all declared; every read comes before the first write.
]]
--- @include now
--- @include check_types
--- @include chunked
--- @include last_claim

local limit, lease, claim_id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'set', KEYS[5], 'string' })
if bad then return bad end
local now = redis_now()
local out = { now, -1 }

local function split(m)
  local sep = string.find(m, '\n', 1, true)
  if not sep then return m, '' end
  return string.sub(m, 1, sep - 1), string.sub(m, sep + 1)
end

local function read(members)
  local events, targets = {}, {}
  for i, m in ipairs(members) do events[i], targets[i] = split(m) end
  local recs = chunked_read('HMGET', KEYS[2], members)
  local bodies = chunked_read('HMGET', KEYS[3], events)
  local gone = #targets > 0 and chunked_read('SMISMEMBER', KEYS[4], targets) or {}
  return recs, bodies, gone
end

local function parse(rec)
  if type(rec) ~= 'string' then return nil end
  local a, c = string.match(rec, '^(%d+):(%d+)$')
  if not a then return nil end
  return tonumber(a), tonumber(c)
end

local function emit(m, c, a, gone, body)
  out[#out + 1] = m
  out[#out + 1] = c
  out[#out + 1] = a
  out[#out + 1] = gone
  out[#out + 1] = body
end

local again = replayed(KEYS[5], claim_id)
if again then
  local recs, bodies, gone = read(again)
  for i, m in ipairs(again) do
    local a, c = parse(recs[i])
    if a and bodies[i] then emit(m, c, a, gone[i], bodies[i]) end
  end
  return out
end

local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local recs, bodies, gone = read(members)

-- Writes from here on.
local lease_end = now + lease
local claimed, attempts, due, orphans = {}, {}, {}, {}
for i, m in ipairs(members) do
  local a, c = parse(recs[i])
  if not bodies[i] then
    -- The event is gone (its last delivery ended on another replica meanwhile).
    orphans[#orphans + 1] = m
  else
    a, c = a or 0, (c or 0) + 1
    attempts[#attempts + 1] = m
    attempts[#attempts + 1] = a .. ':' .. c
    due[#due + 1] = lease_end
    due[#due + 1] = m
    claimed[#claimed + 1] = m
    emit(m, c, a, gone[i], bodies[i])
  end
end
chunked('HSET', KEYS[2], attempts, 2)
chunked('ZADD', KEYS[1], due, 2)
chunked('ZREM', KEYS[1], orphans, 1)
chunked('HDEL', KEYS[2], orphans, 1)
if #claimed > 0 then remember(KEYS[5], claim_id, claimed, lease) end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if nxt[2] then out[2] = tonumber(nxt[2]) end
return out
