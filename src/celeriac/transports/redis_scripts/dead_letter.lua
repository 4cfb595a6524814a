-- Move leased entries of one queue to its dead-letter queue.
--
-- KEYS: the queue's streams of priority 9..0, then its dead-letter queue's streams of
-- priority 9..0 (the same hash slot). ARGV: group, then per entry: priority, entry id,
-- times delivered, the envelope to store (with the dead-letter headers already set).
-- Entries delivered again since the tag was issued are left alone.
local PRIORITIES = 10
local group = ARGV[1]
local moved = 0
for index = 2, #ARGV, 4 do
  local priority = tonumber(ARGV[index])
  local stream = KEYS[PRIORITIES - priority]
  local id, times = ARGV[index + 1], tonumber(ARGV[index + 2])
  local pending = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if pending and pending[4] == times then
    redis.call('XADD', KEYS[2 * PRIORITIES - priority], '*', 'e', ARGV[index + 3])
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    moved = moved + 1
  end
end
return moved
