-- Accepting intake entries into one partition, in two phases: add() validates and reads (a
-- duplicate is found by reading B:runs), apply() writes. Nothing is written until apply(), so
-- a script that fails while adding changes nothing.
-- K = {runs, entries, due, dead}; L = the intake limits; `at` = now as ISO text.
-- keys.ts partitionIndex, the same arithmetic: exact in doubles.
local function partition_of(id, n)
  local h = 0
  for i = 1, #id do h = (h * 31 + string.byte(id, i)) % 2147483647 end
  return h % n
end

local function new_intake_plan(K, L, now, at)
  local plan = { accepted = 0, duplicates = 0, rejected = 0 }
  local records, order, entries, dead = {}, {}, {}, {}

  local function reject(raw, reason)
    dead[#dead + 1] = intake_dead_letter(raw, reason, at)
    plan.rejected = plan.rejected + 1
  end

  local function has_target(w, target)
    return string.find('\n' .. w .. '\n', '\n' .. target .. '\n', 1, true) ~= nil
  end

  local function count_targets(w)
    if w == '' then return 0 end
    local n = 1
    for _ in string.gmatch(w, '\n') do n = n + 1 end
    return n
  end

  -- `here`, `partitions`: when given, a run that belongs to another partition is refused (the
  -- router in intake/store.ts parsed the entry differently, e.g. a duplicated JSON key).
  function plan.add(raw, here, partitions)
    local v, why = validate_entry(raw, L)
    if not v then return reject(raw, why) end
    if partitions and partitions > 1 and partition_of(v.id, partitions) ~= here then
      return reject(raw, 'entry reads as run ' .. v.id .. ' here but was routed elsewhere (a repeated JSON key?)')
    end
    local rec = records[v.id]
    if rec == nil then
      local stored = redis.call('HGET', K.runs, v.id)
      -- An unreadable record is left alone: it is the claim's to dead-letter.
      if stored then rec = unpack_run(stored) or false end
      if rec ~= nil then
        records[v.id] = rec
        order[#order + 1] = v.id
      end
    end
    if rec ~= nil then
      if rec and v.target and not has_target(rec.w, v.target) then
        if count_targets(rec.w) >= L.max_targets then
          return reject(raw, 'run ' .. v.id .. ' already has ' .. L.max_targets .. ' webhook targets')
        end
        rec.w = rec.w == '' and v.target or (rec.w .. '\n' .. v.target)
        rec.dirty = true
      end
      plan.duplicates = plan.duplicates + 1
      return
    end
    local rec = new_run(now, now + (v.max_watch or L.def_max_watch), v.target)
    rec.dirty, rec.new = true, true
    records[v.id] = rec
    order[#order + 1] = v.id
    if v.keep then
      entries[#entries + 1] = v.id
      entries[#entries + 1] = v.keep
    end
    plan.accepted = plan.accepted + 1
  end

  function plan.apply()
    local runs, due = {}, {}
    for _, id in ipairs(order) do
      local rec = records[id]
      if rec and rec.dirty then
        runs[#runs + 1] = id
        runs[#runs + 1] = pack_run(rec)
      end
      if rec and rec.new then
        due[#due + 1] = now
        due[#due + 1] = id
      end
    end
    chunked('HSET', K.runs, runs, 2)
    chunked('HSET', K.entries, entries, 2)
    chunked('ZADD', K.due, due, 2)
    chunked('LPUSH', K.dead, dead, 1)
  end

  return plan
end
