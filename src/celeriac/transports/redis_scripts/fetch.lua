-- Lease up to ARGV[4] messages from one or more queues to consumer ARGV[2].
--
-- KEYS, 13 per queue, queues in the order to serve them: the streams of priority 9..0,
-- the delayed sorted set, the consumers sorted set (heartbeat deadlines) and the sweep marker.
-- ARGV: group, consumer, lease milliseconds, wanted, client time in milliseconds (eta clock).
--
-- Per queue: renew this consumer's heartbeat, move due delayed messages to their streams,
-- and (at most once a lease period) mark consumers that hold entries but have no heartbeat
-- as overdue. Then claim the entries of overdue consumers, and read new entries, highest
-- priority first. Returns {wait for the next delayed message (ms, -1 if none), wait for the
-- next heartbeat deadline of another consumer (ms, -1 if none), then per delivery:
-- queue index, priority, entry id, times delivered in this entry, earlier deliveries, envelope}.
local KEYS_PER_QUEUE = 13
local PRIORITIES = 10
local MOVE_BATCH = 1000
local OVERDUE_BATCH = 10

local group, consumer = ARGV[1], ARGV[2]
local lease_ms = tonumber(ARGV[3])
local wanted = tonumber(ARGV[4])
local eta_now = tonumber(ARGV[5])
local remaining = wanted
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local queue_count = #KEYS / KEYS_PER_QUEUE
local result = {-1, -1}

local function field(fields, name)
  for index = 1, #fields, 2 do
    if fields[index] == name then
      return fields[index + 1]
    end
  end
  return nil
end

local function deliver(queue, priority, entry, times)
  local fields = entry[2]
  result[#result + 1] = queue
  result[#result + 1] = priority
  result[#result + 1] = entry[1]
  result[#result + 1] = times
  result[#result + 1] = tonumber(field(fields, 'c') or '0')
  result[#result + 1] = field(fields, 'e') or ''
  remaining = remaining - 1
end

local function prepare(base)
  local delayed, consumers, sweep = KEYS[base + 11], KEYS[base + 12], KEYS[base + 13]
  redis.call('ZADD', consumers, now + lease_ms, consumer)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', eta_now, 'LIMIT', 0, MOVE_BATCH)
  for _, member in ipairs(due) do
    local priority, count, envelope = string.match(member, '^(%d):(%d+):%x+:(.*)$')
    if priority then
      redis.call('XADD', KEYS[base + PRIORITIES - tonumber(priority)], '*', 'e', envelope, 'c', count)
    end
    redis.call('ZREM', delayed, member)
  end
  -- A consumer can hold entries without a heartbeat only if it was dropped as idle just
  -- before a blocking read served it; the sweep finds such consumers by listing them.
  if redis.call('SET', sweep, '1', 'PX', lease_ms, 'NX') then
    for offset = 1, PRIORITIES do
      -- A stream deleted by hand has no consumers; the read below reports the missing group.
      local listed = redis.pcall('XINFO', 'CONSUMERS', KEYS[base + offset], group)
      if not listed.err then
        for _, info in ipairs(listed) do
          local name = field(info, 'name')
          if field(info, 'pending') > 0 and not redis.call('ZSCORE', consumers, name) then
            redis.call('ZADD', consumers, 0, name)
          end
        end
      end
    end
  end
end

local function claim(base, queue)
  local consumers = KEYS[base + 12]
  local overdue = redis.call('ZRANGEBYSCORE', consumers, '-inf', now, 'LIMIT', 0, OVERDUE_BATCH)
  for _, dead in ipairs(overdue) do
    for offset = 1, PRIORITIES do
      if remaining <= 0 then
        return
      end
      local stream = KEYS[base + offset]
      local pending = redis.call('XPENDING', stream, group, '-', '+', remaining, dead)
      if #pending > 0 then
        local ids, times = {}, {}
        for index, entry in ipairs(pending) do
          ids[index] = entry[1]
          times[entry[1]] = entry[4] + 1
        end
        for _, entry in ipairs(redis.call('XCLAIM', stream, group, consumer, 0, unpack(ids))) do
          deliver(queue, PRIORITIES - offset, entry, times[entry[1]])
        end
      end
    end
    -- Every XPENDING above returned fewer entries than asked: the dead consumer holds none.
    if remaining > 0 then
      redis.call('ZREM', consumers, dead)
      for offset = 1, PRIORITIES do
        redis.call('XGROUP', 'DELCONSUMER', KEYS[base + offset], group, dead)
      end
    end
  end
end

local function read(offset)
  for queue = 1, queue_count do
    if remaining <= 0 then
      return
    end
    local stream = KEYS[(queue - 1) * KEYS_PER_QUEUE + offset]
    local reply = redis.call(
      'XREADGROUP', 'GROUP', group, consumer, 'COUNT', remaining, 'STREAMS', stream, '>')
    if reply then
      for _, entry in ipairs(reply[1][2]) do
        deliver(queue - 1, PRIORITIES - offset, entry, 1)
      end
    end
  end
end

local function waits(base)
  local first = redis.call('ZRANGE', KEYS[base + 11], 0, 0, 'WITHSCORES')
  if first[2] then
    local wait = math.max(0, tonumber(first[2]) - eta_now)
    if result[1] < 0 or wait < result[1] then
      result[1] = wait
    end
  end
  local soonest = redis.call('ZRANGE', KEYS[base + 12], 0, 1, 'WITHSCORES')
  for index = 1, #soonest, 2 do
    if soonest[index] ~= consumer then
      local wait = math.max(0, tonumber(soonest[index + 1]) - now)
      if result[2] < 0 or wait < result[2] then
        result[2] = wait
      end
      break
    end
  end
end

for queue = 1, queue_count do
  prepare((queue - 1) * KEYS_PER_QUEUE)
end
for queue = 1, queue_count do
  claim((queue - 1) * KEYS_PER_QUEUE, queue - 1)
end
for offset = 1, PRIORITIES do
  read(offset)
end
if remaining == wanted then
  for queue = 1, queue_count do
    waits((queue - 1) * KEYS_PER_QUEUE)
  end
end
return result
