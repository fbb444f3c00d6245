--[[ Replays dead letters of one partition: a delivery goes back into the webhook outbox (and
  its target is enabled again if it had answered 410); an intake entry (or a run the API
  refused) runs through the intake rules again. Each dead letter is removed only once all its
  replay needs has been read and checked, and LREM decides: of two replays of one letter
  (two operators at once), one acts and the other finds it gone. Nothing here decodes the
  event, so no depth of nesting can fail a replay half way.
  Input:
    KEYS[1] dead   KEYS[2] webhooks   KEYS[3] attempts   KEYS[4] payloads   KEYS[5] disabled
    KEYS[6] due   KEYS[7] runs   KEYS[8] entries
    ARGV[1..5] the intake limits (as intake.lua ARGV[4..8])   ARGV[6] now as ISO text
    ARGV[7..] items, 5 values each: action, the dead letter exactly as stored, p1, p2, p3
      delivery: p1 = target key, p2 = event id, p3 = event JSON
      intake:   p1 = the entry to take in again
  Output: per item, 1 (replayed) or 0 (another process took it first)
]]
--- @include now
--- @include check_types
--- @include chunked
--- @include run_record
--- @include entry_rules
--- @include dead_letter
--- @include intake_plan

local bad = check_types({ KEYS[1], 'list', KEYS[2], 'zset', KEYS[3], 'hash', KEYS[4], 'hash', KEYS[5], 'set',
  KEYS[6], 'zset', KEYS[7], 'hash', KEYS[8], 'hash' })
if bad then return bad end
local now = redis_now()
local L = read_limits(ARGV, 1)
local at = ARGV[6]
local out = {}
for i = 7, #ARGV - 4, 5 do
  local action, raw, p1, p2, p3 = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local plan, member, queued
  if action == 'delivery' then
    member = p2 .. '\n' .. p1
    queued = redis.call('ZSCORE', KEYS[2], member)
  else
    plan = new_intake_plan({ due = KEYS[6], runs = KEYS[7], entries = KEYS[8], dead = KEYS[1] }, L, now, at)
    plan.add(p1)
  end
  -- This item's writes, once the letter is ours.
  local removed = redis.call('LREM', KEYS[1], 1, raw)
  out[#out + 1] = removed
  if removed == 1 then
    if action == 'delivery' then
      if not queued then
        redis.call('ZADD', KEYS[2], now, member)
        redis.call('HSET', KEYS[3], member, '0:0')
        redis.call('HSET', KEYS[4], p2, p3)
        redis.call('HINCRBY', KEYS[4], p2 .. '#n', 1)
      end
      redis.call('SREM', KEYS[5], p1)
    else
      plan.apply()
    end
  end
end
return out
