--[[ A hint that a run may have finished (Letta's callback): if the run is watched, its next
  poll is now (unless a replica is polling it already). The hint is never trusted beyond
  that: the poll decides. A run that is not watched is ignored.
  Input: KEYS[1] due   KEYS[2] runs   ARGV[1] run id
  Output: 1 if the run is watched (and now due), 0 if not
]]
--- @include now
--- @include check_types
--- @include run_record

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash' })
if bad then return bad end
local r = unpack_run(redis.call('HGET', KEYS[2], ARGV[1]))
if not r then return 0 end
local now = redis_now()
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
if score and not (has_flag(r, 'h') and score >= now) then redis.call('ZADD', KEYS[1], 'LT', now, ARGV[1]) end
return 1
