--[[ Makes deliveries held back by a commit due now (redis.waitReplicas > 0: a commit holds its
  deliveries until WAIT says enough replicas have it, so a failover cannot lose an event whose
  webhooks already went out). Only deliveries never claimed are touched.
  Input: KEYS[1] webhooks   KEYS[2] attempts   ARGV[1..] members
  Output: the number released
]]
--- @include now
--- @include check_types
--- @include chunked

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash' })
if bad then return bad end
local now = redis_now()
local members = {}
for i = 1, #ARGV do members[i] = ARGV[i] end
local recs = chunked_read('HMGET', KEYS[2], members)
local scores = chunked_read('ZMSCORE', KEYS[1], members)
local due = {}
for i, m in ipairs(members) do
  if recs[i] == '0:0' and tonumber(scores[i]) and tonumber(scores[i]) > now then
    due[#due + 1] = now
    due[#due + 1] = m
  end
end
if #due > 0 then
  for j = 1, #due, 960 do redis.call('ZADD', KEYS[1], 'XX', unpack(due, j, math.min(j + 959, #due))) end
end
return #due / 2
