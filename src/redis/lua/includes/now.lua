-- The time on Redis's clock, in ms: every replica reads the same clock, whatever its own says.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
