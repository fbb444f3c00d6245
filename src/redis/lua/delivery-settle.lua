--[[ Settles webhook deliveries of one partition, many per call, fenced like settle.lua: an op
  applies only while the delivery's claim counter is the one claimed and its lease has not
  passed. The event's payload goes when its last delivery ends.
  Each target has a retry index (the deliveries waiting out a failure, by due time), so that
  when the target answers 2xx again its waiting deliveries are released: up to ARGV[1] of them
  per success, made due ARGV[2] ms apart, instead of each waiting out its schedule step (which
  may be 5 minutes or hours). The releases then succeed and release more: a recovered endpoint
  catches up within seconds, at a bounded rate.
  Input:
    KEYS[1] webhooks   KEYS[2] attempts   KEYS[3] payloads   KEYS[4] dead   KEYS[5] disabled
    KEYS[6..] the retry indexes of the targets in these ops (ZSET member -> due)
    ARGV[1] most deliveries released per success   ARGV[2] ms between released deliveries
    ARGV[3..] ops, 6 values each: kind, member, counter, a, b, the KEYS index of the target's
      retry index
      S  delivered (or given up): the delivery ends
      F  failed, retry later: a = delay ms, b = attempts made so far
      X  dead-letter: a = the dead letter's JSON; b = '1' to disable the target (410 Gone)
      B  hand back untried: a = delay ms
      A  delivered, and to be sent again after a = delay ms (a stalled run's alert, re-sent
         while the run stays stalled): attempts start over
  Output: {per op 1 (applied) or 0 (fenced), deliveries released}
  Keys: all declared; every read comes before the first write.
]]
--- @include now
--- @include check_types
--- @include chunked

local types = { KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'list', KEYS[5], 'set' }
for i = 6, #KEYS do types[#types + 1] = KEYS[i]; types[#types + 1] = 'zset' end
local bad = check_types(types)
if bad then return bad end
local now = redis_now()
local per_success, spacing = tonumber(ARGV[1]), tonumber(ARGV[2])
local ops, members, settled = {}, {}, {}
for i = 3, #ARGV - 5, 6 do
  local op = { kind = ARGV[i], m = ARGV[i + 1], counter = ARGV[i + 2], a = ARGV[i + 3], b = ARGV[i + 4], retry = KEYS[tonumber(ARGV[i + 5])] }
  ops[#ops + 1] = op
  members[#members + 1] = op.m
  settled[op.m] = true
end
local recs = chunked_read('HMGET', KEYS[2], members)
local scores = chunked_read('ZMSCORE', KEYS[1], members)
-- What each delivered target could release: its waiting deliveries not due yet.
local waiting, alive = {}, {}
for _, op in ipairs(ops) do
  if op.kind == 'S' and op.retry and waiting[op.retry] == nil then
    local list = redis.call('ZRANGEBYSCORE', op.retry, '(' .. now, '+inf', 'LIMIT', 0, per_success + #ops)
    waiting[op.retry] = list
    local present = #list > 0 and redis.call('ZMSCORE', KEYS[1], unpack(list)) or {}
    for i, m in ipairs(list) do alive[m] = present[i] and true or false end
  end
end

-- Writes from here on.
local out, released = {}, 0
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
      local due = now + tonumber(op.a)
      redis.call('ZADD', KEYS[1], due, op.m)
      redis.call('HSET', KEYS[2], op.m, op.b .. ':' .. counter)
      if op.retry then redis.call('ZADD', op.retry, due, op.m) end
    elseif op.kind == 'B' then
      redis.call('ZADD', KEYS[1], now + tonumber(op.a), op.m)
    elseif op.kind == 'A' then
      redis.call('ZADD', KEYS[1], now + tonumber(op.a), op.m)
      redis.call('HSET', KEYS[2], op.m, '0:' .. counter)
      if op.retry then redis.call('ZREM', op.retry, op.m) end
    else
      if op.kind == 'X' then
        redis.call('LPUSH', KEYS[4], op.a)
        if op.b == '1' then redis.call('SADD', KEYS[5], target) end
      end
      redis.call('ZREM', KEYS[1], op.m)
      redis.call('HDEL', KEYS[2], op.m)
      if op.retry then redis.call('ZREM', op.retry, op.m) end
      if redis.call('HINCRBY', KEYS[3], event_id .. '#n', -1) <= 0 then
        redis.call('HDEL', KEYS[3], event_id, event_id .. '#n')
      end
      -- The target answers again: release some of what waits for it.
      if op.kind == 'S' and op.retry and waiting[op.retry] then
        local budget = per_success
        for _, m in ipairs(waiting[op.retry]) do
          if budget == 0 then break end
          if not alive[m] then
            -- Gone by another way (an orphan dropped at claim): forget it.
            redis.call('ZREM', op.retry, m)
          elseif not settled[m] then
            local at = now + released * spacing
            redis.call('ZADD', KEYS[1], 'XX', at, m)
            redis.call('ZADD', op.retry, at, m)
            released = released + 1
            budget = budget - 1
          end
        end
        waiting[op.retry] = nil
      end
    end
  end
end
return { out, released }
