-- Calls `cmd key unpack(args)` in chunks: Lua's unpack has a stack limit, and one call per
-- chunk costs Redis far less than one per item. `step` keeps pairs together.
local function chunked(cmd, key, args, step)
  local size = 480 * (step or 1)
  for j = 1, #args, size do
    redis.call(cmd, key, unpack(args, j, math.min(j + size - 1, #args)))
  end
end

-- HMGET (or ZMSCORE ...) of many fields, in chunks; returns the values in order.
local function chunked_read(cmd, key, fields)
  local out = {}
  for j = 1, #fields, 480 do
    local part = redis.call(cmd, key, unpack(fields, j, math.min(j + 479, #fields)))
    for k = 1, #part do out[#out + 1] = part[k] end
  end
  return out
end
