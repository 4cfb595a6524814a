-- Acknowledge, requeue or release leased entries of one queue.
--
-- KEYS: the queue's streams of priority 9..0.
-- ARGV: group, mode ('ack', 'requeue' or 'release'), then per entry: priority, entry id,
-- times delivered. An entry whose times-delivered differs was delivered again since the tag
-- was issued (or is gone): it is left alone. 'requeue' and 'release' add the entry again
-- at the end of its stream, recording in field 'c' the deliveries it had ('release' does
-- not count the last one).
local PRIORITIES = 10
local group, mode = ARGV[1], ARGV[2]

local function field(fields, name)
  for index = 1, #fields, 2 do
    if fields[index] == name then
      return fields[index + 1]
    end
  end
  return nil
end

local settled = 0
for index = 3, #ARGV, 3 do
  local stream = KEYS[PRIORITIES - tonumber(ARGV[index])]
  local id, times = ARGV[index + 1], tonumber(ARGV[index + 2])
  local pending = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if pending and pending[4] == times then
    if mode ~= 'ack' then
      local entry = redis.call('XRANGE', stream, id, id)[1]
      if entry then
        local count = tonumber(field(entry[2], 'c') or '0') + times
        if mode == 'release' then
          count = count - 1
        end
        redis.call('XADD', stream, '*', 'e', field(entry[2], 'e') or '', 'c', count)
      end
    end
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    settled = settled + 1
  end
end
return settled
