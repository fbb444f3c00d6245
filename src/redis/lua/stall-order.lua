--[[ Keeps a stalled run's messages to one target in order: the stall's alert, then its
  resolution. Alertmanager and PagerDuty resolve by key, so a stall alert that lands after the
  run's end would fire again and stay up.
  Input:
    KEYS[1] webhooks   KEYS[2] runs
    ARGV[1] 'stall' (a run.stalled delivery is about to be sent) or 'end' (the run's end is)
    ARGV[2] run id   ARGV[3] the member of the run.stalled delivery to this target
    ARGV[4] the delivery lease ms
  Output:
    'stall': 1 while the run is still watched (send it), 0 once it has ended (done, unsent)
    'end': 1 when no stall delivery to this target is pending (send), 0 while one is (wait).
      A pending one that is not in flight (its score is past any lease, so it waits out a
      retry or its next re-send) is made due now: it then finds the run ended and goes.
  Keys: all declared.
]]
--- @include now
--- @include check_types

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash' })
if bad then return bad end
if ARGV[1] == 'stall' then
  return redis.call('HEXISTS', KEYS[2], ARGV[2])
end
local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[3]))
if not score then return 1 end
local now = redis_now()
if score > now + tonumber(ARGV[4]) then redis.call('ZADD', KEYS[1], 'XX', now, ARGV[3]) end
return 0
