-- Make the run records match the configured entries, and return them.
-- KEYS: last_run hash, run_count hash, fingerprint hash.
-- ARGV: now (microseconds since the epoch), then the entries as name, fingerprint pairs.
-- An entry whose fingerprint is missing or different is anchored at now (never earlier
-- than its recorded last run); records of other names are deleted.
-- Returns {last_run as name, value..., run_count as name, value...}.
local now = tonumber(ARGV[1])
local wanted = {}
for index = 2, #ARGV, 2 do
  local name, fingerprint = ARGV[index], ARGV[index + 1]
  wanted[name] = true
  if redis.call('HGET', KEYS[3], name) ~= fingerprint then
    redis.call('HSET', KEYS[3], name, fingerprint)
    local last = redis.call('HGET', KEYS[1], name)
    if not last or tonumber(last) < now then
      redis.call('HSET', KEYS[1], name, ARGV[1])
    end
  end
end
for _, key in ipairs({KEYS[1], KEYS[3]}) do
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if not wanted[name] then
      redis.call('HDEL', KEYS[1], name)
      redis.call('HDEL', KEYS[2], name)
      redis.call('HDEL', KEYS[3], name)
    end
  end
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
