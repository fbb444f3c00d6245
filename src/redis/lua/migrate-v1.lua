--[[ Moves watch state written by version 0.1 (one hash per run, one per event) into this
  layout (one partition: the same slot), a batch at a time, so a daemon upgraded in place
  takes over the runs and deliveries the older version left. Each run and delivery keeps its
  due score (or lease end) and its claim counter: a 0.1 replica still holding a lease finds
  its run gone and its settle refused, and the run comes due here when the lease ends.
  Input:
    KEYS[1] old schedule   KEYS[2] old outbox   KEYS[3] due   KEYS[4] runs   KEYS[5] entries
    KEYS[6] webhooks   KEYS[7] attempts   KEYS[8] payloads
    KEYS[9 .. 8+R] the old run hashes of the R runs in ARGV
    KEYS[9+R ..] the old event hashes of the deliveries in ARGV
    ARGV[1] R, ARGV[2 .. 1+R] run ids, then the delivery members ("<event id>\n<target>")
  Output: {runs moved, deliveries moved}
  Keys: all declared; every read comes before the first write.
]]
--- @include check_types
--- @include chunked
--- @include run_record

local types = { KEYS[1], 'zset', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'hash', KEYS[5], 'hash', KEYS[6], 'zset', KEYS[7], 'hash', KEYS[8], 'hash' }
for i = 9, #KEYS do types[#types + 1] = KEYS[i]; types[#types + 1] = 'hash' end
local bad = check_types(types)
if bad then return bad end
local r = tonumber(ARGV[1])
local runs, moves = {}, {}
for i = 1, r do
  local id = ARGV[1 + i]
  local f = redis.call('HMGET', KEYS[8 + i], 'e', 'd', 'p', 'c', 'r', 'w')
  runs[i] = { id = id, f = f, score = redis.call('ZSCORE', KEYS[1], id), exists = redis.call('HEXISTS', KEYS[4], id) == 1 }
end
for i = 2 + r, #ARGV do
  local m = ARGV[i]
  local sep = string.find(m, '\n', 1, true)
  local target = string.sub(m, sep + 1)
  local ek = KEYS[9 + r + (i - 2 - r)]
  local f = redis.call('HMGET', ek, 'ev', 'a:' .. target, 'c:' .. target)
  moves[#moves + 1] = { m = m, event = string.sub(m, 1, sep - 1), target = target, ek = ek, f = f, score = redis.call('ZSCORE', KEYS[2], m),
    queued = redis.call('ZSCORE', KEYS[6], m) }
end

-- Writes from here on.
local moved_runs, moved_deliveries = 0, 0
for i, run in ipairs(runs) do
  local f = run.f
  if f[1] and run.score and not run.exists then
    local rec = new_run(tonumber(f[1]), tonumber(f[2]) or 0, f[6])
    rec.p, rec.c = tonumber(f[3]) or 0, tonumber(f[4]) or 0
    redis.call('HSET', KEYS[4], run.id, pack_run(rec))
    if f[5] then redis.call('HSET', KEYS[5], run.id, f[5]) end
    redis.call('ZADD', KEYS[3], run.score, run.id)
    moved_runs = moved_runs + 1
  end
  redis.call('ZREM', KEYS[1], run.id)
  redis.call('DEL', KEYS[8 + i])
end
for _, d in ipairs(moves) do
  local f = d.f
  if f[1] and d.score and not d.queued then
    redis.call('ZADD', KEYS[6], d.score, d.m)
    redis.call('HSET', KEYS[7], d.m, (tonumber(f[2]) or 0) .. ':' .. (tonumber(f[3]) or 0))
    redis.call('HSET', KEYS[8], d.event, f[1])
    redis.call('HINCRBY', KEYS[8], d.event .. '#n', 1)
    moved_deliveries = moved_deliveries + 1
  end
  redis.call('ZREM', KEYS[2], d.m)
  redis.call('HDEL', d.ek, 'a:' .. d.target, 'c:' .. d.target, 's:' .. d.target)
  if redis.call('HINCRBY', d.ek, 'n', -1) <= 0 then redis.call('DEL', d.ek) end
end
return { moved_runs, moved_deliveries }
