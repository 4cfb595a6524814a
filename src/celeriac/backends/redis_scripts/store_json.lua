-- Store a task's result meta and publish it, unless a SUCCESS is stored (wire protocol
-- §7.1): the store of the JSON serializer in one round trip instead of WATCH, GET and
-- MULTI/EXEC.
--
-- KEYS: the result key, which is also its channel.
-- ARGV: the encoded meta, its expiry in ms (0: none).
-- Returns 1 if stored, 0 if a stored SUCCESS was kept, -1 if the stored value is not
-- JSON this script can read: the caller then decides in Python.
local key, body, expires = KEYS[1], ARGV[1], tonumber(ARGV[2])

local stored = redis.call('GET', key)
if stored then
  local ok, meta = pcall(cjson.decode, stored)
  if not ok or type(meta) ~= 'table' then
    return -1
  end
  if meta['status'] == 'SUCCESS' then
    return 0
  end
end
if expires > 0 then
  redis.call('SET', key, body, 'PX', expires)
else
  redis.call('SET', key, body)
end
redis.call('PUBLISH', key, body)
return 1
