--[[ The fleet's API budget: one token bucket for every replica sharing this Redis, so N sidecars
  with one Letta API key make at most `max` requests a second between them. Tokens accrue at
  the current rate up to `burst`; a 429 from Letta halves the rate (at most once a second) and
  stops all grants until its Retry-After has passed; the rate then climbs back by `step` per
  second (additive increase, multiplicative decrease). Replicas take tokens a few at a time.
  Input:
    KEYS[1] the budget (HASH: tokens, at, rate, until, cut)
    ARGV[1] 'take' or 'throttle'   ARGV[2] max rate (requests/s)   ARGV[3] burst
    ARGV[4] take: tokens wanted; throttle: Retry-After ms (0 if none)
    ARGV[5] rate climb per second   ARGV[6] lowest rate
  Output: {tokens granted, current rate x 1000, ms until a token may be had}
]]
--- @include now
--- @include check_types

local bad = check_types({ KEYS[1], 'hash' })
if bad then return bad end
local now = redis_now()
local op, max, burst, n, step, floor_rate = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'rate', 'until', 'cut')
local tokens, at, rate, until_ms, cut = tonumber(b[1]) or burst, tonumber(b[2]) or now, tonumber(b[3]) or max, tonumber(b[4]) or 0, tonumber(b[5]) or 0
local elapsed = math.max(0, now - at)
rate = math.min(max, rate + step * elapsed / 1000)
tokens = math.min(burst, tokens + rate * elapsed / 1000)
local granted, wait = 0, 0
if op == 'throttle' then
  if now - cut >= 1000 then
    rate = math.max(floor_rate, rate / 2)
    cut = now
  end
  tokens = 0
  until_ms = math.max(until_ms, now + n)
else
  if now < until_ms then
    wait = until_ms - now
  else
    granted = math.min(n, math.floor(tokens))
    tokens = tokens - granted
    if granted < n then wait = math.ceil((1 - (tokens - math.floor(tokens))) * 1000 / math.max(rate, 0.001)) end
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now, 'rate', tostring(rate), 'until', until_ms, 'cut', cut)
redis.call('PEXPIRE', KEYS[1], 3600000)
return { granted, math.floor(rate * 1000), wait }
