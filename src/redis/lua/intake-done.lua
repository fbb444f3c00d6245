--[[ Ends a batch moved by intake-take.lua once every entry of it is in its partition.
  Input: KEYS[1] the processing list   KEYS[2] its batch id key   ARGV[1] the batch id
  Output: 1 if the batch was this one and is gone, else 0
]]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
