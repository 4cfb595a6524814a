-- Keep revoked ids ARGV[3..] until the Unix time ARGV[2], keeping a later expiry already
-- stored; drop ids expired by ARGV[1] (now); let the key expire with its last id.
-- KEYS: the revoked sorted set (member: task id, score: expiry).
local key = KEYS[1]
local expires = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[1])
for index = 3, #ARGV do
  local stored = redis.call('ZSCORE', key, ARGV[index])
  if not stored or tonumber(stored) < expires then
    redis.call('ZADD', key, ARGV[2], ARGV[index])
  end
end
local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if last[2] then
  redis.call('EXPIREAT', key, math.ceil(tonumber(last[2])) + 1)
end
return 1
