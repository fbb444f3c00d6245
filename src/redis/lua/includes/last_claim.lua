-- Replaying a lost claim. ioredis re-sends a command whose reply was lost when the connection
-- dropped; a claim that ran but whose reply never arrived would then claim *other* items and
-- leave the first ones leased to nobody. So each replica keeps its last claim (one key per
-- replica and kind, overwritten each time, gone after a lease): a claim arriving with the same
-- claim id returns the same items. Items are joined with \r, which neither run IDs nor
-- delivery members can hold (intake refuses control characters in URLs).
local function replayed(key, claim_id)
  local last = redis.call('GET', key)
  if not last then return nil end
  local items = {}
  for part in string.gmatch(last, '[^\r]+') do items[#items + 1] = part end
  if items[1] ~= claim_id then return nil end
  table.remove(items, 1)
  return items
end

local function remember(key, claim_id, items, lease)
  redis.call('SET', key, claim_id .. '\r' .. table.concat(items, '\r'), 'PX', lease)
end
