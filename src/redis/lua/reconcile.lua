--[[ Reconciles one partition with a page of Letta's active runs (GET /v1/runs/?active=true,
  newest first). The page is a hint, never proof: a watched run the page should hold but does
  not (it ended, or was deleted, or belongs elsewhere) is made due now, and its poll decides;
  a watched run the page holds has its next poll pushed out, but never past its last poll plus
  the safety gap (nor past its deadline), so a stale page can only delay an ending, never hide it.
  Which runs the page "should hold": those created after its oldest run when the page is full
  (older ones may be beyond it), all of them when it is not. A run is known by its created_at
  once a poll has seen it (KEYS[3]); runs not yet polled are left to their first poll.
  Input:
    KEYS[1] due   KEYS[2] runs   KEYS[3] created (run id -> created_at ms)
    ARGV[1] the page's oldest created_at (ms) when it is full, or '-inf'
    ARGV[2] the safety gap (ms)   ARGV[3..] the page's run IDs that belong to this partition
  A run a replica holds (claimed, not yet settled) is left alone: its poll is under way. A run
  made due for missing, whose poll then found it still going, is not made due again while it
  stays missing (flag 'r': it may belong to another organisation, or sit beyond the page): it
  costs one poll, not one per pass; its cadence goes on.
  Output: {made due now, pushed out}
  Keys: all declared; every read comes before the first write.
]]
--- @include now
--- @include check_types
--- @include chunked
--- @include run_record

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'zset' })
if bad then return bad end
local now = redis_now()
local bound, gap = ARGV[1], tonumber(ARGV[2])
local listed = {}
for i = 3, #ARGV do listed[ARGV[i]] = true end

-- Strictly after the bound: a run created in the same millisecond as the page's oldest may
-- be just beyond the page.
local min = bound == '-inf' and '-inf' or ('(' .. bound)
local candidates = redis.call('ZRANGEBYSCORE', KEYS[3], min, '+inf')
local recs = chunked_read('HMGET', KEYS[2], candidates)
local scores = chunked_read('ZMSCORE', KEYS[1], candidates)

-- Writes from here on.
local due_now, pushed, records = {}, {}, {}
for i, id in ipairs(candidates) do
  local r = unpack_run(recs[i])
  local score = tonumber(scores[i])
  if r and score and not (has_flag(r, 'h') and score >= now) then
    if not listed[id] then
      if not has_flag(r, 'r') then
        set_flag(r, 'r')
        records[#records + 1] = id
        records[#records + 1] = pack_run(r)
        if score > now then
          due_now[#due_now + 1] = now
          due_now[#due_now + 1] = id
        end
      end
    else
      if has_flag(r, 'r') then
        clear_flag(r, 'r')
        records[#records + 1] = id
        records[#records + 1] = pack_run(r)
      end
      -- Never past the run's deadline: its last poll happens then at the latest.
      local latest = math.min(r.l + gap, r.d)
      if latest > score then
        pushed[#pushed + 1] = latest
        pushed[#pushed + 1] = id
      end
    end
  end
end
chunked('HSET', KEYS[2], records, 2)
chunked('ZADD', KEYS[1], due_now, 2)
chunked('ZADD', KEYS[1], pushed, 2)
return { #due_now / 2, #pushed / 2 }
