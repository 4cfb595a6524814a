-- Renew consumer ARGV[1]'s heartbeat in one queue: its deadline becomes the server's
-- time plus ARGV[2] milliseconds. KEYS: the queue's consumers sorted set.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
