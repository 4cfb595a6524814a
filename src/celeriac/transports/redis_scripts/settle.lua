-- Acknowledge, requeue or release leased entries of one queue.
--
-- KEYS: the queue's streams of priority 9..0, then its delayed sorted set.
-- ARGV: group, mode ('ack', 'requeue' or 'release'), the time (ms, eta clock) a requeued
-- entry becomes ready again or 0 for at once, then per entry: priority, entry id, times
-- delivered. An entry whose times-delivered differs was delivered again since the tag was
-- issued (or is gone): it is left alone. 'requeue' and 'release' add the entry again at the
-- end of its stream, or to the delayed set, recording the deliveries it had ('release' does
-- not count the last one); a delayed member is "priority:count:token:envelope", as
-- fetch.lua reads it, with the entry id as its unique token.
local PRIORITIES = 10
local group, mode, ready_at = ARGV[1], ARGV[2], tonumber(ARGV[3])
local delayed = KEYS[PRIORITIES + 1]

local function field(fields, name)
  for index = 1, #fields, 2 do
    if fields[index] == name then
      return fields[index + 1]
    end
  end
  return nil
end

local settled = 0
for index = 4, #ARGV, 3 do
  local priority = ARGV[index]
  local stream = KEYS[PRIORITIES - tonumber(priority)]
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
        local envelope = field(entry[2], 'e') or ''
        if ready_at > 0 then
          local token = string.gsub(id, '-', 'f')
          redis.call('ZADD', delayed, ready_at, priority .. ':' .. count .. ':' .. token .. ':' .. envelope)
        else
          redis.call('XADD', stream, '*', 'e', envelope, 'c', count)
        end
      end
    end
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    settled = settled + 1
  end
end
return settled
