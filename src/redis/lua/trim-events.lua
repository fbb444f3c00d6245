--[[ Trims an events stream to its configured length, but never past what a consumer group
  still needs: an entry stays while any group has not been delivered it, or has it pending
  (delivered, not acknowledged). Past the hard cap the oldest entries go even so (memory is
  the last resort), and the reply says how many of those a group still needed, so the daemon
  can count and log the loss loudly.
  Input: KEYS[1] events   ARGV[1] configured length   ARGV[2] hard cap
  Output: {entries trimmed, of which still needed by a group}
  Cost: bounded: at most 10,000 entries are looked at per call (calls repeat as events come).
]]
--- @include check_types

local bad = check_types({ KEYS[1], 'stream' })
if bad then return bad end
local key, maxlen, hard = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local len = redis.call('XLEN', key)
if len <= maxlen then return { 0, 0 } end

local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return { tonumber(ms), tonumber(seq) }
end
local function before(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function field(list, name)
  for i = 1, #list - 1, 2 do if list[i] == name then return list[i + 1] end end
  return nil
end

-- The oldest entry any group still needs (nil: no group needs anything older than the tail).
local need
local groups = redis.call('XINFO', 'GROUPS', key)
for _, g in ipairs(groups) do
  local pending = redis.call('XPENDING', key, field(g, 'name'))
  local id
  if tonumber(pending[1]) > 0 then
    id = parse_id(pending[2])
  else
    local last = parse_id(field(g, 'last-delivered-id'))
    id = { last[1], last[2] + 1 }
  end
  if need == nil or before(id, need) then need = id end
end

local trimmed = 0
local oldest = parse_id(redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1][1])
if need == nil or before(oldest, need) then
  -- The first entry to keep: the newest `maxlen` stay, or (past 10,000 to go) part of the way.
  local excess = len - maxlen
  local page = redis.call('XRANGE', key, '-', '+', 'COUNT', math.min(excess + 1, 10000))
  local cut = parse_id(page[#page][1])
  if need ~= nil and before(need, cut) then cut = need end
  trimmed = redis.call('XTRIM', key, 'MINID', cut[1] .. '-' .. cut[2])
end
len = len - trimmed
local lost = 0
if len > hard then
  -- Everything left is needed by a group (else it would have gone above).
  lost = redis.call('XTRIM', key, 'MAXLEN', hard)
  trimmed = trimmed + lost
end
return { trimmed, lost }
