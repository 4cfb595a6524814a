-- Record a due run of one entry, once, and only for the holder of the lease.
-- KEYS: lease, last_run hash, run_count hash.
-- ARGV: owner, entry name, due time (microseconds since the epoch), 1 to count the run.
-- Returns 1 if the run was claimed: ARGV[1] holds the lease and the recorded last run
-- is earlier than the due time.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local last = redis.call('HGET', KEYS[2], ARGV[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] == '1' then
  redis.call('HINCRBY', KEYS[3], ARGV[2], 1)
end
return 1
