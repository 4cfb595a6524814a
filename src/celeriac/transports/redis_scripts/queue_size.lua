-- Count the waiting entries of one queue: delayed, plus those in its streams that are not
-- leased (every acknowledged entry is deleted, so a stream holds only pending and waiting ones).
--
-- KEYS: the queue's streams of priority 9..0, then its delayed sorted set. ARGV: group.
local PRIORITIES = 10
local group = ARGV[1]
local size = redis.call('ZCARD', KEYS[PRIORITIES + 1])
for offset = 1, PRIORITIES do
  local length = redis.call('XLEN', KEYS[offset])
  if length > 0 then
    local summary = redis.pcall('XPENDING', KEYS[offset], group)
    if type(summary) == 'table' and not summary.err then
      length = length - summary[1]
    end
    size = size + length
  end
end
return size
