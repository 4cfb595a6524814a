-- Give back every entry consumer ARGV[2] holds in one queue, without counting the
-- delivery, and forget the consumer (its heartbeat and its name in the group).
--
-- KEYS: the queue's streams of priority 9..0, then its consumers sorted set.
-- ARGV: group, consumer.
local PRIORITIES = 10
local BATCH = 100
local group, consumer = ARGV[1], ARGV[2]

local function field(fields, name)
  for index = 1, #fields, 2 do
    if fields[index] == name then
      return fields[index + 1]
    end
  end
  return nil
end

local released = 0
for offset = 1, PRIORITIES do
  local stream = KEYS[offset]
  if redis.call('EXISTS', stream) == 1 then
    repeat
      local pending = redis.call('XPENDING', stream, group, '-', '+', BATCH, consumer)
      for _, item in ipairs(pending) do
        local id = item[1]
        local entry = redis.call('XRANGE', stream, id, id)[1]
        if entry then
          local count = tonumber(field(entry[2], 'c') or '0') + item[4] - 1
          redis.call('XADD', stream, '*', 'e', field(entry[2], 'e') or '', 'c', count)
          released = released + 1
        end
        redis.call('XACK', stream, group, id)
        redis.call('XDEL', stream, id)
      end
    until #pending < BATCH
    redis.call('XGROUP', 'DELCONSUMER', stream, group, consumer)
  end
end
redis.call('ZREM', KEYS[PRIORITIES + 1], consumer)
return released
