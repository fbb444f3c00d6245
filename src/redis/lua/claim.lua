--[[ Claims due runs of one partition with a lease (a visibility timeout): their due score
  becomes the lease end and their claim counter goes up. The counter is the fence: a settle
  (settle.lua) is refused unless the counter is still the one claimed and the lease has not
  passed, so a replica that stalled past its lease cannot commit, and the runs of a replica
  that died come due again on their own when the lease runs out. A replica renews the leases
  of work still in flight (renew.lua), so leases can be short and takeover quick.
  `p` (polls) is counted here, in the same write as the counter; a reschedule of a run that was
  not polled gives it back.
  Input:
    KEYS[1] due   KEYS[2] runs   KEYS[3] this replica's last-claim key   KEYS[4] dead
    ARGV[1] most runs   ARGV[2] lease ms   ARGV[3] claim id (new per call; see last_claim)
    ARGV[4] now as ISO text (for dead letters)
  Output: {now, next due score or -1, then per run: id, counter, enqueued ms, deadline ms,
    polls before this claim, created_at ms or '', stalled-at ms or ''}
  Keys: all declared (run state is a field of KEYS[2]); every read comes before the first write.
]]
--- @include now
--- @include check_types
--- @include chunked
--- @include run_record
--- @include last_claim
--- @include dead_letter

local limit, lease, claim_id, at = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'string', KEYS[4], 'list' })
if bad then return bad end
local now = redis_now()
local out = { now, -1 }
local function emit(id, r, polls_before)
  out[#out + 1] = id
  out[#out + 1] = r.c
  out[#out + 1] = r.e
  out[#out + 1] = r.d
  out[#out + 1] = polls_before
  out[#out + 1] = r.k
  out[#out + 1] = stalled_at(r)
end

local again = replayed(KEYS[3], claim_id)
if again then
  local recs = chunked_read('HMGET', KEYS[2], again)
  for i, id in ipairs(again) do
    local r = unpack_run(recs[i])
    if r then emit(id, r, r.p - 1) end
  end
  return out
end

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
local recs = chunked_read('HMGET', KEYS[2], ids)

-- Writes from here on.
local lease_end = now + lease
local claimed, runs, due, gone, dead = {}, {}, {}, {}, {}
for i, id in ipairs(ids) do
  local raw = recs[i]
  local r = unpack_run(raw)
  if not raw then
    gone[#gone + 1] = id
  elseif not r then
    -- A record no version of this daemon wrote: keep it where an operator can see it.
    gone[#gone + 1] = id
    dead[#dead + 1] = cjson.encode({ kind = 'run', reason = 'unreadable watch record', at = at, entry = id, record = utf8_clean(raw) })
  else
    local polls_before = r.p
    r.c = r.c + 1
    r.p = r.p + 1
    r.l = now
    set_flag(r, 'h')
    runs[#runs + 1] = id
    runs[#runs + 1] = pack_run(r)
    due[#due + 1] = lease_end
    due[#due + 1] = id
    claimed[#claimed + 1] = id
    emit(id, r, polls_before)
  end
end
chunked('HSET', KEYS[2], runs, 2)
chunked('ZADD', KEYS[1], due, 2)
chunked('ZREM', KEYS[1], gone, 1)
chunked('HDEL', KEYS[2], gone, 1)
chunked('LPUSH', KEYS[4], dead, 1)
if #claimed > 0 then remember(KEYS[3], claim_id, claimed, lease) end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then out[2] = tonumber(first[2]) end
return out
