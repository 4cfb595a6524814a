-- Set a chord's size, as a client does once it has sent the header (wire protocol §7.3),
-- and claim the chord when every header task has already reported.
--
-- Like Celery 5.7's set_chord_size it drops G.c first: a frozen chord applied again
-- reuses its group id, and its new run must not look finished or claimed.
--
-- KEYS: G.s (size), G.c (claim), G.j (results), G.t (total diff).
-- ARGV: size, expiry of the size in ms (0: none), claim expiry in ms, claim token,
--       "1" if G.j is a sorted set or "0" if it is a list (result_chord_ordered=False).
-- Returns {ready count, total diff, 1 if claimed else 0, results if claimed}: members
-- with scores from a sorted set, members in arrival order from a list.
local size_key, claim_key, results, total_diff_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local size, expires = tonumber(ARGV[1]), tonumber(ARGV[2])
local claim_expires, token, ordered = tonumber(ARGV[3]), ARGV[4], ARGV[5] == '1'

-- Refuse, before writing anything, a G.j of the other type (see chord_part_done.lua).
local found = redis.call('TYPE', results)['ok']
if found ~= 'none' and found ~= (ordered and 'zset' or 'list') then
  return redis.error_reply('WRONGTYPE chord results are a ' .. found)
end

redis.call('DEL', claim_key)
if expires > 0 then
  redis.call('SET', size_key, size, 'PX', expires)
else
  redis.call('SET', size_key, size)
end
local ready
if ordered then
  ready = redis.call('ZCARD', results)
else
  ready = redis.call('LLEN', results)
end
local total_diff = redis.call('GET', total_diff_key)
if ready == size + tonumber(total_diff or 0) then
  redis.call('SET', claim_key, token, 'PX', claim_expires)
  if ordered then
    return {ready, total_diff, 1, redis.call('ZRANGE', results, 0, -1, 'WITHSCORES')}
  end
  return {ready, total_diff, 1, redis.call('LRANGE', results, 0, -1)}
end
return {ready, total_diff, 0, {}}
