--[[ Checks intake entries against the intake rules without writing anything: what
  `letta-run-watcher enqueue` runs before it pushes, so it refuses exactly what the daemon
  would dead-letter (the rules are lua/includes/entry_rules.lua, shared with intake.lua).
  Input: no keys. ARGV[1..5] the limits (as intake.lua ARGV[4..8]), ARGV[6..] the entries.
  Output: one reply per entry: '' when valid, else the reason.
]]
--- @include entry_rules

local L = read_limits(ARGV, 1)
local out = {}
for i = 6, #ARGV do
  local v, why = validate_entry(ARGV[i], L)
  out[#out + 1] = v and '' or why
end
return out
