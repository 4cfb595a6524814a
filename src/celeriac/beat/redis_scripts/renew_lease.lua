-- Renew the beat lease for its holder: compare the owner, then extend.
-- KEYS: the lease. ARGV: owner, milliseconds. Returns 1 if ARGV[1] holds the lease.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
