-- Delete the waiting entries of one queue (delayed, and not yet delivered to the group);
-- leased entries stay. Returns how many were deleted.
--
-- KEYS: the queue's streams of priority 9..0, then its delayed sorted set. ARGV: group.
local PRIORITIES = 10
local BATCH = 1000
local group = ARGV[1]

local function field(fields, name)
  for index = 1, #fields, 2 do
    if fields[index] == name then
      return fields[index + 1]
    end
  end
  return nil
end

local purged = redis.call('ZCARD', KEYS[PRIORITIES + 1])
redis.call('DEL', KEYS[PRIORITIES + 1])
for offset = 1, PRIORITIES do
  local stream = KEYS[offset]
  if redis.call('EXISTS', stream) == 1 then
    local last = '0-0'
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      if field(info, 'name') == group then
        last = field(info, 'last-delivered-id')
      end
    end
    repeat
      local entries = redis.call('XRANGE', stream, '(' .. last, '+', 'COUNT', BATCH)
      for _, entry in ipairs(entries) do
        redis.call('XDEL', stream, entry[1])
        last = entry[1]
      end
      purged = purged + #entries
    until #entries < BATCH
  end
end
return purged
