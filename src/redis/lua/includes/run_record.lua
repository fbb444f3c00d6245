-- A watched run, packed in one field of B:runs: "e:d:p:c:k:f:w" =
--   e enqueued ms, d deadline ms, p polls made, c claim counter (the fence),
--   k the run's created_at ms once a poll has seen it (or empty), f flags (or empty),
--   w per-run webhook target keys, \n-joined (last, since URLs hold colons).
local function unpack_run(s)
  if type(s) ~= 'string' then return nil end
  local f, pos = {}, 1
  for i = 1, 6 do
    local sep = string.find(s, ':', pos, true)
    if not sep then return nil end
    f[i] = string.sub(s, pos, sep - 1)
    pos = sep + 1
  end
  local r = { e = tonumber(f[1]), d = tonumber(f[2]), p = tonumber(f[3]), c = tonumber(f[4]), k = f[5], f = f[6], w = string.sub(s, pos) }
  if not (r.e and r.d and r.p and r.c) then return nil end
  return r
end

local function pack_run(r)
  return string.format('%d:%d:%d:%d:%s:%s:%s', r.e, r.d, r.p, r.c, r.k, r.f, r.w)
end
