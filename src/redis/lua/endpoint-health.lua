--[[ Delivery health per endpoint, and the operator events it raises (Svix's operational
  webhooks, Hookdeck Outpost's operator events). Partition 0 holds it all, so one script can
  append an event and record its deliveries.
  State per endpoint, a JSON field of KEYS[1]: n = deliveries in a row with no 2xx, said = the
  state last announced ('ok' or 'failing'), last / held = per event type, when one was last
  raised and how many were held back since. An endpoint is failing after ARGV[1] failures in a
  row and recovered at its next 2xx; each kind of event is raised at most once per ARGV[2] ms
  per endpoint (the rest are counted in the next one's `suppressed`), so a dead endpoint does
  not flood the pager. A state change held back is announced at the endpoint's next report
  after the gap, if it still holds.
  Input:
    KEYS[1] endpoints (HASH)   KEYS[2] ops (STREAM)   KEYS[3] webhooks   KEYS[4] attempts
    KEYS[5] payloads
    ARGV[1] failures in a row that make an endpoint failing   ARGV[2] gap ms
    ARGV[3] first delivery delay ms   ARGV[4] ops stream MAXLEN (approximate)
    ARGV[5] now, ISO text (event timestamps)   ARGV[6] a nonce for event ids
    ARGV[7..10] target keys subscribed to endpoint.failing, endpoint.recovered,
      endpoint.disabled, delivery.dead (\n-joined)
    ARGV[11..] reports, 6 values each: endpoint name, its own target key (gets no event about
      itself), outcome (S 2xx, F no 2xx, G 410 Gone, X no 2xx and dead-lettered), last HTTP
      status or '', detail, the dead delivery's event id ('' for none, or for a delivery of
      an operator event: those raise no delivery.dead, which would feed on itself)
  Output: {deliveries recorded, then per event raised: type, endpoint name, event id}
  Keys: all declared; every read comes before the first write.
]]
--- @include now
--- @include check_types

local bad = check_types({ KEYS[1], 'hash', KEYS[2], 'stream', KEYS[3], 'zset', KEYS[4], 'hash', KEYS[5], 'hash' })
if bad then return bad end
local now = redis_now()
local failing_after, gap, first, maxlen, at, nonce = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local subscribers = {}
for i, kind in ipairs({ 'endpoint.failing', 'endpoint.recovered', 'endpoint.disabled', 'delivery.dead' }) do
  local list = {}
  for key in string.gmatch(ARGV[6 + i], '[^\n]+') do list[#list + 1] = key end
  subscribers[kind] = list
end

local reports, names, seen = {}, {}, {}
for i = 11, #ARGV - 5, 6 do
  local r = { name = ARGV[i], self = ARGV[i + 1], outcome = ARGV[i + 2], status = ARGV[i + 3], detail = ARGV[i + 4], event = ARGV[i + 5] }
  reports[#reports + 1] = r
  if not seen[r.name] then
    seen[r.name] = true
    names[#names + 1] = r.name
  end
end
local states = {}
if #names > 0 then
  local raw = redis.call('HMGET', KEYS[1], unpack(names))
  for i, name in ipairs(names) do
    local ok, st = pcall(cjson.decode, raw[i] or '')
    if not ok or type(st) ~= 'table' then st = {} end
    st.n, st.said, st.last, st.held = tonumber(st.n) or 0, st.said or 'ok', st.last or {}, st.held or {}
    states[name] = st
  end
end

-- Writes from here on.
local out, count = { 0 }, 0
-- Raises `kind` unless one was raised within the gap; a held-back delivery.dead or
-- endpoint.disabled is counted (a state change is not: it is announced later).
local function raise(st, r, kind, extra_id)
  local last = tonumber(st.last[kind])
  if last and now - last < gap then
    if kind == 'delivery.dead' or kind == 'endpoint.disabled' then st.held[kind] = (tonumber(st.held[kind]) or 0) + 1 end
    return false
  end
  count = count + 1
  local id = 'evt_' .. string.sub(redis.sha1hex(r.name .. '\n' .. kind .. '\n' .. nonce .. '\n' .. count), 1, 32)
  local event = cjson.encode({
    id = id,
    type = kind,
    timestamp = at,
    data = {
      target = r.name,
      consecutive_failures = st.n,
      last_status = tonumber(r.status) or cjson.null,
      detail = r.detail,
      event_id = extra_id ~= '' and extra_id or cjson.null,
      suppressed = tonumber(st.held[kind]) or 0,
    },
  })
  st.last[kind] = now
  st.held[kind] = nil
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', maxlen, '*', 'event', event)
  local fresh = 0
  for _, key in ipairs(subscribers[kind]) do
    if key ~= r.self then
      local m = id .. '\n' .. key
      redis.call('ZADD', KEYS[3], now + first, m)
      redis.call('HSET', KEYS[4], m, '0:0')
      fresh = fresh + 1
    end
  end
  if fresh > 0 then
    redis.call('HSET', KEYS[5], id, event)
    redis.call('HINCRBY', KEYS[5], id .. '#n', fresh)
    out[1] = out[1] + fresh
  end
  out[#out + 1] = kind
  out[#out + 1] = r.name
  out[#out + 1] = id
  return true
end

for _, r in ipairs(reports) do
  local st = states[r.name]
  if r.outcome == 'S' then
    st.n = 0
  else
    st.n = st.n + 1
    if r.outcome == 'G' then raise(st, r, 'endpoint.disabled', '') end
    if r.outcome == 'X' and r.event ~= '' then raise(st, r, 'delivery.dead', r.event) end
  end
  -- The state to announce, if it is not the one last announced.
  local actual = st.n >= failing_after and 'failing' or (st.n == 0 and 'ok' or st.said)
  if actual ~= st.said then
    if raise(st, r, actual == 'failing' and 'endpoint.failing' or 'endpoint.recovered', '') then st.said = actual end
  end
end

for _, name in ipairs(names) do
  local st = states[name]
  local quiet = st.n == 0 and st.said == 'ok' and next(st.held) == nil
  for _, t in pairs(st.last) do
    if now - tonumber(t) < gap then quiet = false end
  end
  if quiet then
    redis.call('HDEL', KEYS[1], name)
  else
    redis.call('HSET', KEYS[1], name, cjson.encode(st))
  end
end
return out
