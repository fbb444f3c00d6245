--[[ Settles polled runs of one partition, many per call. Each op is fenced: it applies only
  while the run's claim counter is the one its claim returned and its lease (the due score)
  has not passed; a replica that lost its lease has its ops refused.
  Input:
    KEYS[1] due   KEYS[2] runs   KEYS[3] entries   KEYS[4] events   KEYS[5] webhooks
    KEYS[6] attempts   KEYS[7] payloads   KEYS[8] dead   KEYS[9] created (run id -> created_at
    ms, the index reconcile.lua reads)
    ARGV[1] delay of a new delivery's first attempt (ms)
    ARGV[2..] ops, 7 values each: kind, run id, counter, a, b, c, d
      R  reschedule: a = delay ms; b = '1' if the run was polled, '0' if not (gives back the
         poll its claim counted); c = the run's created_at ms to remember (and index), or ''
      C  commit: a = event JSON; b = event id; c = configured target keys, \n-joined. Appends
         the event, records one delivery per target (and per-run target) and drops the run:
         all or nothing.
      T  stalled: a, b, c as for C, d = delay ms. Appends the run.stalled event and records
         its deliveries (configured targets only: a per-run URL hears of the end), flags the
         run stalled and reschedules it (polled): the watch goes on.
      D  dead-letter the run: a = the dead letter's JSON
  Output: {per op 1 (applied) or 0 (fenced: the lease was lost), the deliveries recorded}
  Keys: all declared; every read (records, lease scores, existing deliveries) comes before the
  first write. Events are appended untrimmed: trim-events.lua trims, sparing what consumer
  groups have not read.
]]
--- @include now
--- @include check_types
--- @include chunked
--- @include run_record

local bad = check_types({ KEYS[1], 'zset', KEYS[2], 'hash', KEYS[3], 'hash', KEYS[4], 'stream', KEYS[5], 'zset',
  KEYS[6], 'hash', KEYS[7], 'hash', KEYS[8], 'list', KEYS[9], 'zset' })
if bad then return bad end
local now = redis_now()
local first = tonumber(ARGV[1])

local ops, ids = {}, {}
for i = 2, #ARGV - 6, 7 do
  ops[#ops + 1] = { kind = ARGV[i], id = ARGV[i + 1], counter = tonumber(ARGV[i + 2]), a = ARGV[i + 3], b = ARGV[i + 4], c = ARGV[i + 5], d = ARGV[i + 6] }
  ids[#ids + 1] = ARGV[i + 1]
end
local recs = chunked_read('HMGET', KEYS[2], ids)
local scores = chunked_read('ZMSCORE', KEYS[1], ids)

-- Which ops hold their lease, and the deliveries each commit would record.
local members = {}
for n, op in ipairs(ops) do
  local r = unpack_run(recs[n])
  local score = tonumber(scores[n])
  op.ok = r ~= nil and score ~= nil and score >= now and r.c == op.counter
  op.rec = r
  if op.ok and (op.kind == 'C' or op.kind == 'T') then
    op.members = {}
    for _, list in ipairs({ op.c, op.kind == 'C' and r.w or '' }) do
      for target in string.gmatch(list, '[^\n]+') do
        local m = op.b .. '\n' .. target
        op.members[#op.members + 1] = m
        members[#members + 1] = m
      end
    end
  end
end
local existing = {}
local present = chunked_read('ZMSCORE', KEYS[5], members)
for i, m in ipairs(members) do
  if present[i] then existing[m] = true end
end

-- Writes from here on.
local out, due, runs, drop, webhooks, attempts, recorded, created = {}, {}, {}, {}, {}, {}, {}, {}
for _, op in ipairs(ops) do
  out[#out + 1] = op.ok and 1 or 0
  if op.ok then
    local r = op.rec
    if op.kind == 'R' then
      due[#due + 1] = now + tonumber(op.a)
      due[#due + 1] = op.id
      -- No longer held (reconcile.lua and hint.lua may now move its next poll).
      local changed = has_flag(r, 'h')
      clear_flag(r, 'h')
      if op.b == '0' then r.p = r.p - 1; changed = true end
      if op.c ~= '' and r.k == '' then
        r.k = op.c
        changed = true
        created[#created + 1] = tonumber(op.c)
        created[#created + 1] = op.id
      end
      if changed then
        runs[#runs + 1] = op.id
        runs[#runs + 1] = pack_run(r)
      end
    elseif op.kind == 'C' or op.kind == 'T' then
      redis.call('XADD', KEYS[4], '*', 'event', op.a)
      local fresh = 0
      for _, m in ipairs(op.members) do
        if not existing[m] then
          existing[m] = true
          fresh = fresh + 1
          webhooks[#webhooks + 1] = now + first
          webhooks[#webhooks + 1] = m
          attempts[#attempts + 1] = m
          attempts[#attempts + 1] = '0:0'
          recorded[#recorded + 1] = m
        end
      end
      if fresh > 0 then
        redis.call('HSET', KEYS[7], op.b, op.a)
        redis.call('HINCRBY', KEYS[7], op.b .. '#n', fresh)
      end
      if op.kind == 'C' then
        drop[#drop + 1] = op.id
      else
        due[#due + 1] = now + tonumber(op.d)
        due[#due + 1] = op.id
        clear_flag(r, 'h')
        set_flag(r, 's' .. now)
        runs[#runs + 1] = op.id
        runs[#runs + 1] = pack_run(r)
      end
    elseif op.kind == 'D' then
      redis.call('LPUSH', KEYS[8], op.a)
      drop[#drop + 1] = op.id
    end
  end
end
chunked('ZADD', KEYS[1], due, 2)
chunked('HSET', KEYS[2], runs, 2)
chunked('ZADD', KEYS[5], webhooks, 2)
chunked('HSET', KEYS[6], attempts, 2)
chunked('ZREM', KEYS[1], drop, 1)
chunked('HDEL', KEYS[2], drop, 1)
chunked('HDEL', KEYS[3], drop, 1)
chunked('ZADD', KEYS[9], created, 2)
chunked('ZREM', KEYS[9], drop, 1)
return { out, recorded }
