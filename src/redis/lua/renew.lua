--[[ Renews the leases of items a replica still works on (a poll or a webhook still in flight),
  so leases can be short: a replica that dies stops renewing, and its items come due within one
  lease. Fenced like a settle: only items whose claim counter is still the one claimed.
  Input:
    KEYS[1] the zset (due or webhooks)   KEYS[2] the hash (runs or attempts)
    ARGV[1] lease ms   ARGV[2] which ':'-separated field of the record holds the counter
            (4 in a run record, 2 in a delivery's attempts record)
    ARGV[3..] (member, counter) pairs
  Output: per item, 1 (renewed) or 0 (no longer ours)
]]
--- @include now
--- @include check_types
--- @include chunked

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash' })
if bad then return bad end
local now = redis_now()
local lease, field = tonumber(ARGV[1]), tonumber(ARGV[2])
local items, counters = {}, {}
for i = 3, #ARGV - 1, 2 do
  items[#items + 1] = ARGV[i]
  counters[#counters + 1] = ARGV[i + 1]
end
local recs = chunked_read('HMGET', KEYS[2], items)

local function counter_of(rec)
  if type(rec) ~= 'string' then return nil end
  local pos = 1
  for _ = 1, field - 1 do
    local sep = string.find(rec, ':', pos, true)
    if not sep then return nil end
    pos = sep + 1
  end
  local stop = string.find(rec, ':', pos, true)
  return stop and string.sub(rec, pos, stop - 1) or string.sub(rec, pos)
end

-- Writes from here on.
local out, due = {}, {}
for i, m in ipairs(items) do
  local ok = counter_of(recs[i]) == counters[i]
  out[#out + 1] = ok and 1 or 0
  if ok then
    due[#due + 1] = now + lease
    due[#due + 1] = m
  end
end
if #due > 0 then
  for j = 1, #due, 960 do redis.call('ZADD', KEYS[1], 'XX', unpack(due, j, math.min(j + 959, #due))) end
end
return out
