-- The intake rules: the one definition of a valid intake entry. The daemon applies them in
-- intake.lua and dead-replay.lua, and `letta-run-watcher enqueue` runs them through
-- check-entries.lua, so the CLI refuses exactly what the daemon would dead-letter.
-- Every pattern here is linear in the entry's length (a 64 KiB entry costs microseconds).
-- L = {max_bytes, def_max_watch, max_watch_cap, max_depth, max_targets}.

local function is_space(b) return b == 32 or (b >= 9 and b <= 13) end

-- string.match(s, '^%s*(.-)%s*$') is quadratic on a long run of interior white space, inside
-- one C call Redis cannot interrupt; this is one pass from each end.
local function trim(raw)
  local first = string.find(raw, '[^%s]')
  if not first then return '' end
  local last = #raw
  while is_space(string.byte(raw, last)) do last = last - 1 end
  return string.sub(raw, first, last)
end

local function valid_id(s)
  return type(s) == 'string' and #s <= 128 and string.find(s, '^[%w][%w_%-]*$') ~= nil
end

-- A host name the WHATWG URL parser (new URL() in Node) reads as the same host: letters,
-- digits and hyphens in dot-separated labels; or, when the last label is a number (which
-- WHATWG reads as IPv4, hex and octal included), a plain dotted quad.
local function host_ok(host)
  if #host == 0 or #host > 253 or string.find(host, '[^%w%-%.]') then return false end
  local h = host
  local trailing_dot = string.sub(h, -1) == '.'
  if trailing_dot then h = string.sub(h, 1, -2) end
  local labels, start = {}, 1
  while start do
    local dot = string.find(h, '.', start, true)
    local label = dot and string.sub(h, start, dot - 1) or string.sub(h, start)
    if #label == 0 or #label > 63 then return false end
    labels[#labels + 1] = label
    start = dot and dot + 1 or nil
  end
  local last = labels[#labels]
  if not (string.find(last, '^%d+$') or string.find(last, '^0[xX]%x*$')) then return true end
  if #labels ~= 4 or trailing_dot then return false end
  for _, l in ipairs(labels) do
    if not string.find(l, '^%d%d?%d?$') or (#l > 1 and string.sub(l, 1, 1) == '0') or tonumber(l) > 255 then return false end
  end
  return true
end

local function hex_groups(part)
  if part == '' then return 0 end
  local n = 0
  for g in string.gmatch(part .. ':', '([^:]*):') do
    if #g < 1 or #g > 4 then return nil end
    n = n + 1
  end
  return n
end

-- An IPv6 literal (without brackets): hex groups, at most one '::' (no embedded IPv4).
local function ipv6_ok(s)
  if #s < 2 or #s > 39 or string.find(s, '[^%x:]') then return false end
  local dbl = string.find(s, '::', 1, true)
  if not dbl then return hex_groups(s) == 8 end
  if string.find(s, '::', dbl + 1, true) then return false end
  local a, b = hex_groups(string.sub(s, 1, dbl - 1)), hex_groups(string.sub(s, dbl + 2))
  return a ~= nil and b ~= nil and a + b <= 7
end

-- The URL rule for per-run webhook targets. Stricter than WHATWG on purpose: whatever it
-- accepts, new URL() accepts too and names the same host, so no URL can pass intake and then
-- fail at delivery.
local function url_problem(s)
  if type(s) ~= 'string' then return 'is not a string' end
  if #s > 2048 then return 'is longer than 2048 bytes' end
  if string.find(s, '[^!-~]') then
    return 'holds a space, a control character or a non-ASCII byte (write hosts in their xn-- form and percent-encode the rest)'
  end
  local rest = string.match(s, '^[hH][tT][tT][pP][sS]?://(.*)$')
  if not rest then return 'is not an http(s) URL' end
  if string.find(s, '\\', 1, true) then return 'holds a backslash' end
  local stop = string.find(rest, '[/?#]')
  local authority = stop and string.sub(rest, 1, stop - 1) or rest
  if string.find(authority, '@', 1, true) then return 'carries credentials (user:password@), which are refused' end
  local port
  if string.sub(authority, 1, 1) == '[' then
    local close = string.find(authority, ']', 2, true)
    if not close then return 'has an unclosed [ in its host' end
    if not ipv6_ok(string.sub(authority, 2, close - 1)) then return 'has an invalid IPv6 address' end
    port = string.sub(authority, close + 1)
  else
    local colon = string.find(authority, ':', 1, true)
    local host = colon and string.sub(authority, 1, colon - 1) or authority
    if not host_ok(host) then return 'has an invalid host (letters, digits, hyphens and dots, or a dotted IPv4 address)' end
    port = colon and string.sub(authority, colon) or ''
  end
  if port ~= '' then
    local digits = string.match(port, '^:(%d%d?%d?%d?%d?)$')
    if not digits or tonumber(digits) < 1 or tonumber(digits) > 65535 then return 'has an invalid port (1-65535)' end
  end
  return nil
end

local function present(v) return v ~= nil and v ~= cjson.null end

-- Decodes JSON with Redis's cjson made strict: no NaN, Infinity or hex numbers (not JSON), and
-- at most `depth` levels of nesting. The settings are global to Redis's Lua state, so they are
-- put back as they were.
local function decode_strict(s, depth)
  local lenient = cjson.decode_invalid_numbers()
  local max_depth = cjson.decode_max_depth()
  cjson.decode_invalid_numbers(false)
  cjson.decode_max_depth(depth)
  local ok, obj = pcall(cjson.decode, s)
  cjson.decode_invalid_numbers(lenient)
  cjson.decode_max_depth(max_depth)
  return ok, obj
end

-- Returns {id, target (a target key or nil), max_watch (or nil), keep (the JSON text when it
-- carries metadata, else nil)}, or nil and the reason.
local function validate_entry(raw, L)
  if #raw > L.max_bytes then return nil, 'entry is ' .. #raw .. ' bytes, more than the limit of ' .. L.max_bytes end
  local s = trim(raw)
  if string.sub(s, 1, 1) ~= '{' then
    if valid_id(s) then return { id = s } end
    return nil, 'not a valid run ID (^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$) nor a JSON object'
  end
  local ok, obj = decode_strict(s, L.max_depth)
  if not ok then
    if string.find(tostring(obj), 'nested', 1, true) then return nil, 'entry is nested deeper than ' .. L.max_depth .. ' levels' end
    return nil, 'not valid JSON'
  end
  if type(obj) ~= 'table' then return nil, 'not valid JSON' end
  if not valid_id(obj.run_id) then return nil, 'run_id is missing or not a valid run ID (^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$)' end
  if present(obj.webhook_url) and present(obj.callback_url) and obj.webhook_url ~= obj.callback_url then
    return nil, 'webhook_url and callback_url name different URLs'
  end
  for _, field in ipairs({ 'webhook_url', 'callback_url' }) do
    if present(obj[field]) then
      local problem = url_problem(obj[field])
      if problem then return nil, field .. ' ' .. problem end
    end
  end
  -- cjson decodes [] and {} alike; the text tells an empty array apart.
  if present(obj.metadata) and (type(obj.metadata) ~= 'table' or obj.metadata[1] ~= nil
      or (next(obj.metadata) == nil and string.find(s, '"metadata"%s*:%s*%[') ~= nil)) then
    return nil, 'metadata is not a JSON object'
  end
  local mw = obj.max_watch_ms
  if present(mw) and (type(mw) ~= 'number' or mw < 1 or mw > L.max_watch_cap or mw % 1 ~= 0) then
    return nil, 'max_watch_ms is not a whole number of milliseconds from 1 to ' .. string.format('%d', L.max_watch_cap)
  end
  local v = { id = obj.run_id }
  -- A callback_url target gets Letta's callback body, so its receiver works unchanged.
  if present(obj.webhook_url) then v.target = 'u:' .. obj.webhook_url elseif present(obj.callback_url) then v.target = 'l:' .. obj.callback_url end
  if present(mw) then v.max_watch = mw end
  if present(obj.metadata) then v.keep = s end
  return v
end

local function read_limits(argv, at)
  return {
    max_bytes = tonumber(argv[at]), def_max_watch = tonumber(argv[at + 1]), max_watch_cap = tonumber(argv[at + 2]),
    max_depth = tonumber(argv[at + 3]), max_targets = tonumber(argv[at + 4]),
  }
end
