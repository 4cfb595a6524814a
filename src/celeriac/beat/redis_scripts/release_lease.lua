-- Give the beat lease up if ARGV[1] holds it. KEYS: the lease. Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
