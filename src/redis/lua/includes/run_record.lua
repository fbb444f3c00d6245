-- A watched run, packed in one field of B:runs: "e:d:p:c:k:l:f:w" =
--   e enqueued ms, d deadline ms, p polls made, c claim counter (the fence),
--   k the run's created_at ms once a poll has seen it (or empty), l when it was last claimed
--   (ms, 0 before its first claim), f flags (or empty),
--   w per-run webhook target keys, \n-joined (last, since URLs hold colons).
local RUN_FIELDS = 7

local function unpack_run(s)
  if type(s) ~= 'string' then return nil end
  local f, pos = {}, 1
  for i = 1, RUN_FIELDS do
    local sep = string.find(s, ':', pos, true)
    if not sep then return nil end
    f[i] = string.sub(s, pos, sep - 1)
    pos = sep + 1
  end
  local r = { e = tonumber(f[1]), d = tonumber(f[2]), p = tonumber(f[3]), c = tonumber(f[4]), k = f[5], l = tonumber(f[6]), f = f[7], w = string.sub(s, pos) }
  if not (r.e and r.d and r.p and r.c and r.l) then return nil end
  return r
end

local function pack_run(r)
  return string.format('%d:%d:%d:%d:%s:%d:%s:%s', r.e, r.d, r.p, r.c, r.k, r.l, r.f, r.w)
end

-- A run just taken in: enqueued `now`, watched until `deadline`, with per-run targets `w`.
local function new_run(now, deadline, w)
  return { e = now, d = deadline, p = 0, c = 0, k = '', l = 0, f = '', w = w or '' }
end

-- Flags, one letter each: 'h' held (claimed and not yet settled: a replica is polling it);
-- 'r' made due by reconcile.lua for missing from the list of active runs, and not listed since;
-- 's<ms>' reported stalled at <ms> (run.stalled; digits are no flag, so older code keeps them).
local function has_flag(r, flag) return string.find(r.f, flag, 1, true) ~= nil end
local function set_flag(r, flag) if not has_flag(r, flag) then r.f = r.f .. flag end end
local function clear_flag(r, flag) r.f = string.gsub(r.f, flag, '') end
local function stalled_at(r) return string.match(r.f, 's(%d+)') or '' end
