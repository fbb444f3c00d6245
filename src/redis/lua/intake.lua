--[[ Moves intake entries into one partition's watch state, atomically: each entry is either
  still waiting, or watched, or in the dead-letter list with its reason. One call takes at most
  ARGV[2] entries and about ARGV[3] bytes (the entry that crosses the budget is the last), so a
  batch of large entries cannot hold Redis for long.
  Input:
    KEYS[1] source: P:intake (mode 'list'); in mode 'args' the partition's due key again
    KEYS[2] due   KEYS[3] runs   KEYS[4] entries   KEYS[5] dead   KEYS[6] moved
    ARGV[1] mode: 'list' takes entries from the right of KEYS[1] (FIFO); 'args' takes them from
            ARGV[13..] as (move id, entry) pairs and skips move ids already applied (N > 1:
            entries come through a replica's processing list, see intake/store.ts)
    ARGV[2] most entries   ARGV[3] most bytes
    ARGV[4..8] limits: max entry bytes, default max watch ms, max watch cap ms, max JSON depth,
            max webhook targets per run
    ARGV[9] now as ISO text (for dead letters)   ARGV[10] how long move ids are remembered (ms)
    ARGV[11] this partition's index   ARGV[12] the partition count (mode 'args' checks that each
            entry's run belongs here, as keys.ts partitionIndex computes it)
  Output: {taken, accepted, duplicates, rejected}
  Keys: all declared; a run's state is a field of KEYS[3]. Every read comes before the first write.
]]
--- @include now
--- @include check_types
--- @include chunked
--- @include run_record
--- @include entry_rules
--- @include dead_letter
--- @include intake_plan

local mode, most, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local L = read_limits(ARGV, 4)
local at, keep_moved = ARGV[9], tonumber(ARGV[10])
local here, partitions = tonumber(ARGV[11]), tonumber(ARGV[12])
local bad = check_types({ KEYS[1], mode == 'list' and 'list' or 'zset', KEYS[2], 'zset', KEYS[3], 'hash',
  KEYS[4], 'hash', KEYS[5], 'list', KEYS[6], 'zset' })
if bad then return bad end
local now = redis_now()
local plan = new_intake_plan({ due = KEYS[2], runs = KEYS[3], entries = KEYS[4], dead = KEYS[5] }, L, now, at)

local taken, bytes, moved = 0, 0, {}
if mode == 'list' then
  -- Read from the tail in small pages until the count or the byte budget is reached.
  while taken < most and bytes < budget do
    local want = math.min(8, most - taken)
    local page = redis.call('LRANGE', KEYS[1], -(taken + want), -(taken + 1))
    for j = #page, 1, -1 do
      if taken >= most or bytes >= budget then break end
      taken = taken + 1
      bytes = bytes + #page[j]
      plan.add(page[j])
    end
    if #page < want then break end
  end
else
  for i = 13, #ARGV - 1, 2 do
    local move_id, raw = ARGV[i], ARGV[i + 1]
    taken = taken + 1
    if not redis.call('ZSCORE', KEYS[6], move_id) then
      plan.add(raw, here, partitions)
      moved[#moved + 1] = now
      moved[#moved + 1] = move_id
    end
  end
end

-- Writes from here on.
plan.apply()
if mode == 'list' and taken > 0 then redis.call('LTRIM', KEYS[1], 0, -(taken + 1)) end
if #moved > 0 then
  chunked('ZADD', KEYS[6], moved, 2)
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now - keep_moved)
end
return { taken, plan.accepted, plan.duplicates, plan.rejected }
