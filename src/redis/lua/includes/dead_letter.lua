-- Dead letters are JSON; JSON is UTF-8. A rejected entry may hold any bytes (and a cut at
-- 1 KiB may split a character), so bytes that are not UTF-8 become U+FFFD.
local function utf8_clean(s)
  if not string.find(s, '[\128-\255]') then return s end
  local out, i, n = {}, 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len = 0
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then len = 3
    elseif c >= 0xF0 and c <= 0xF4 then len = 4 end
    local ok = len > 0 and i + len - 1 <= n
    if ok then
      for k = i + 1, i + len - 1 do
        local b = string.byte(s, k)
        if b < 0x80 or b > 0xBF then ok = false; break end
      end
    end
    if ok and len >= 3 then
      -- overlong forms, surrogates, and code points past U+10FFFF
      local b = string.byte(s, i + 1)
      if (c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F) or (c == 0xF0 and b < 0x90) or (c == 0xF4 and b > 0x8F) then ok = false end
    end
    if ok then
      out[#out + 1] = string.sub(s, i, i + len - 1)
      i = i + len
    else
      out[#out + 1] = '\239\191\189'
      i = i + 1
    end
  end
  return table.concat(out)
end

-- The dead letter of a rejected intake entry: the entry is kept whole up to 1 KiB.
local function intake_dead_letter(raw, reason, at)
  local entry, truncated = raw, false
  if #entry > 1024 then entry, truncated = string.sub(entry, 1, 1024), true end
  return cjson.encode({ kind = 'intake', reason = reason, at = at, entry = utf8_clean(entry), entry_bytes = #raw, truncated = truncated })
end
