--[[ With N > 1 partitions, entries cannot move from P:intake into their partition in one
  script (different slots). This is the first step of the reliable-queue pattern: move a batch
  into this replica's processing list (in the intake's slot), give it a batch id, and return it.
  intake/store.ts then applies each entry to its partition (intake.lua mode 'args', which skips
  move ids "<batch id>:<index>" already applied) and removes the batch (intake-done.lua). A
  replica that dies mid-move leaves its processing list; another takes it over here once the
  dead replica's liveness has run out, and finishes it with the same move ids, so an entry is
  neither lost nor applied twice.
  Input:
    KEYS[1] intake   KEYS[2] this replica's processing list   KEYS[3] its batch id key
    KEYS[4] replica liveness (ZSET replica -> expiry ms)
    KEYS[5] an orphaned processing list to take over (or KEYS[2] again)   KEYS[6] its batch key
    ARGV[1] this replica   ARGV[2] liveness ms   ARGV[3] most entries   ARGV[4] most bytes
    ARGV[5] a new batch id   ARGV[6] the orphan's replica id, or ''
  Output: {batch id or '', entries oldest first...}
  Keys: all declared; every read comes before the first write.
]]
--- @include now
--- @include check_types

local bad = check_types({ KEYS[1], 'list', KEYS[2], 'list', KEYS[3], 'string', KEYS[4], 'zset', KEYS[5], 'list', KEYS[6], 'string' })
if bad then return bad end
local now = redis_now()
local me, ttl, most, budget, new_batch, orphan = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]

local batch = redis.call('GET', KEYS[3])
local mine = redis.call('LRANGE', KEYS[2], 0, -1)
local source, adopted, taken = nil, nil, {}
if #mine == 0 and orphan ~= '' then
  local expiry = tonumber(redis.call('ZSCORE', KEYS[4], orphan))
  if expiry and expiry < now then
    adopted = redis.call('LRANGE', KEYS[5], 0, -1)
    source = redis.call('GET', KEYS[6])
  end
end
if #mine == 0 and not adopted then
  local bytes = 0
  while #taken < most and bytes < budget do
    local want = math.min(8, most - #taken)
    local page = redis.call('LRANGE', KEYS[1], -(#taken + want), -(#taken + 1))
    for j = #page, 1, -1 do
      if #taken >= most or bytes >= budget then break end
      taken[#taken + 1] = page[j]
      bytes = bytes + #page[j]
    end
    if #page < want then break end
  end
end

-- Writes from here on.
redis.call('ZADD', KEYS[4], now + ttl, me)
if adopted then
  for j = 1, #adopted, 480 do redis.call('RPUSH', KEYS[2], unpack(adopted, j, math.min(j + 479, #adopted))) end
  mine = adopted
  -- Without a batch id nothing of it was applied yet: any new id will do.
  batch = source or new_batch
  redis.call('SET', KEYS[3], batch)
  redis.call('DEL', KEYS[5], KEYS[6])
  redis.call('ZREM', KEYS[4], orphan)
elseif #taken > 0 then
  for j = 1, #taken, 480 do redis.call('RPUSH', KEYS[2], unpack(taken, j, math.min(j + 479, #taken))) end
  redis.call('LTRIM', KEYS[1], 0, -(#taken + 1))
  mine = taken
  batch = new_batch
  redis.call('SET', KEYS[3], batch)
elseif #mine > 0 and not batch then
  -- Moved here by a blocking wait (BLMOVE) with no batch yet.
  batch = new_batch
  redis.call('SET', KEYS[3], batch)
end
local out = { #mine > 0 and batch or '' }
for _, e in ipairs(mine) do out[#out + 1] = e end
return out
