-- Book rate-limit start slots for one or more task types by the server's clock, so that
-- every worker of the fleet draws from the same slots (SharedStartSlots in base.py).
--
-- KEYS: one hash per task type, fields `next` (its next free slot) and `interval` (the
-- spacing it was last booked with), both in microseconds. ARGV: for each key in turn, the
-- spacing in microseconds and how many slots to book. Returns the delay of every booked
-- slot from now, in microseconds, the keys' slots one after another.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local delays = {}
for index, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * index - 1])
  local count = tonumber(ARGV[2 * index])
  local stored = redis.call('HMGET', key, 'next', 'interval')
  local next_free = tonumber(stored[1]) or now
  if tonumber(stored[2]) ~= interval then
    -- The rate changed: slots booked under the old one do not push the new ones back.
    next_free = math.min(next_free, now + interval)
  end
  local start = math.max(now, next_free)
  for slot = 0, count - 1 do
    delays[#delays + 1] = start - now + slot * interval
  end
  next_free = start + count * interval
  redis.call('HSET', key, 'next', string.format('%.0f', next_free), 'interval',
    string.format('%.0f', interval))
  -- Kept while a slot is booked; a key gone means no slot is taken, as it should.
  redis.call('PEXPIRE', key, math.floor((next_free - now) / 1000) + 1000)
end
return delays
