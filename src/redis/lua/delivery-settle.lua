--[[ Settles webhook deliveries of one partition, many per call, fenced like settle.lua: an op
  applies only while the delivery's claim counter is the one claimed and its lease has not
  passed. The event's payload goes when its last delivery ends.
  Input:
    KEYS[1] webhooks   KEYS[2] attempts   KEYS[3] payloads   KEYS[4] dead   KEYS[5] disabled
    ARGV[1..] ops, 5 values each: kind, member, counter, a, b
      S  delivered (or given up): the delivery ends
      F  failed, retry later: a = delay ms, b = attempts made so far
      X  dead-letter: a = the dead letter's JSON; b = '1' to disable the target (410 Gone)
      B  hand back untried: a = delay ms
  Output: per op, 1 (applied) or 0 (fenced)
  Keys: all declared; every read comes before the first write.
]]
--- @include now
--- @include check_types
--- @include chunked

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'list', KEYS[5], 'set' })
if bad then return bad end
local now = redis_now()
local ops, members = {}, {}
for i = 1, #ARGV - 4, 5 do
  ops[#ops + 1] = { kind = ARGV[i], m = ARGV[i + 1], counter = ARGV[i + 2], a = ARGV[i + 3], b = ARGV[i + 4] }
  members[#members + 1] = ARGV[i + 1]
end
local recs = chunked_read('HMGET', KEYS[2], members)
local scores = chunked_read('ZMSCORE', KEYS[1], members)

-- Writes from here on.
local out = {}
for n, op in ipairs(ops) do
  local rec = recs[n]
  local counter = type(rec) == 'string' and string.match(rec, ':(%d+)$') or nil
  local score = tonumber(scores[n])
  local ok = counter ~= nil and counter == op.counter and score ~= nil and score >= now
  out[#out + 1] = ok and 1 or 0
  if ok then
    local sep = string.find(op.m, '\n', 1, true) or (#op.m + 1)
    local event_id, target = string.sub(op.m, 1, sep - 1), string.sub(op.m, sep + 1)
    if op.kind == 'F' then
      redis.call('ZADD', KEYS[1], now + tonumber(op.a), op.m)
      redis.call('HSET', KEYS[2], op.m, op.b .. ':' .. counter)
    elseif op.kind == 'B' then
      redis.call('ZADD', KEYS[1], now + tonumber(op.a), op.m)
    else
      if op.kind == 'X' then
        redis.call('LPUSH', KEYS[4], op.a)
        if op.b == '1' then redis.call('SADD', KEYS[5], target) end
      end
      redis.call('ZREM', KEYS[1], op.m)
      redis.call('HDEL', KEYS[2], op.m)
      if redis.call('HINCRBY', KEYS[3], event_id .. '#n', -1) <= 0 then
        redis.call('HDEL', KEYS[3], event_id, event_id .. '#n')
      end
    end
  end
end
return out
