-- Refuses to run (before any write) when a key holds the wrong type. Redis keeps the writes of
-- a script that fails half way, so a WRONGTYPE error in the middle would leave half a step
-- done. `pairs_list` is {key, expected type, key, expected type, ...}; a missing key is fine.
local function check_types(pairs_list)
  for i = 1, #pairs_list, 2 do
    local key, want = pairs_list[i], pairs_list[i + 1]
    local got = redis.call('TYPE', key).ok
    if got ~= 'none' and got ~= want then
      return redis.error_reply('ERR letta-run-watcher: key ' .. key .. ' holds a ' .. got .. ', expected a ' .. want)
    end
  end
  return nil
end
