--[[ Readiness: proves this key space takes writes and its keys have the types we expect.
  Input: KEYS[1] the probe key (written), KEYS[2..] keys to check
    ARGV[1] the value to write (the replica id)   ARGV[2] its expiry ms
    ARGV[3..] the expected type of KEYS[2..], in order
  Output: a list of problems, each "<key> holds a <type>, expected a <type>" (empty when fine).
  The write runs first on purpose: a replica that cannot write (READONLY after a failover,
  CLUSTERDOWN) must fail here.
]]
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local problems = {}
for i = 2, #KEYS do
  local got = redis.call('TYPE', KEYS[i]).ok
  local want = ARGV[i + 1]
  if got ~= 'none' and got ~= want then problems[#problems + 1] = KEYS[i] .. ' holds a ' .. got .. ', expected a ' .. want end
end
return problems
