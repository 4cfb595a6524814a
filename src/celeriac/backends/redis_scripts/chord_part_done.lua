-- Record one finished header task of a chord and claim the chord when it completes
-- (wire protocol §7.3, Celery 5.7's keys and semantics, so Celery workers can share it).
--
-- G.j is a sorted set scored by group index (Celery's default), or with an ordered flag
-- of "0" a list in arrival order (result_chord_ordered=False); the members are the same.
--
-- KEYS: G.j (results), G.t (total diff), G.s (size), G.d (counted set), G (saved group),
--       G.c (claim). ARGV: task id, encoded [1, task id, state, result], group index (a
--       score; "+inf" without one), "1" for a sorted set or "0" for a list, expiry of the
--       chord keys in ms (0: none), expiry of G in ms (0: none), claim expiry in ms,
--       claim token.
-- Returns {ready count, total diff, size, 1 if claimed else 0, results if claimed}: the
-- results are members with scores from a sorted set, members in arrival order from a
-- list. A ready count of -1 means the chord already finished and nothing was recorded.
local results, total_diff_key, size_key, counted_key, group_key, claim_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local task_id, value, score, ordered = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1'
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
local claim_expires, token = tonumber(ARGV[7]), ARGV[8]

-- Refuse, before writing anything, a G.j of the other type: a worker with the other
-- result_chord_ordered writes it, and a Lua error does not undo earlier writes.
local found = redis.call('TYPE', results)['ok']
if found ~= 'none' and found ~= (ordered and 'zset' or 'list') then
  return redis.error_reply('WRONGTYPE chord results are a ' .. found)
end

if redis.call('GET', claim_key) == 'done' then
  return {-1, false, false, 0, {}}
end

-- A redelivered header task is counted once per (task id, group index).
local counted_as = task_id .. ':' .. score
if redis.call('SADD', counted_key, counted_as) == 1 then
  if ordered then
    redis.call('ZADD', results, score, value)
  else
    redis.call('RPUSH', results, value)
  end
end
local ready
if ordered then
  ready = redis.call('ZCARD', results)
else
  ready = redis.call('LLEN', results)
end
if expires > 0 then
  for _, key in ipairs({results, total_diff_key, size_key, counted_key}) do
    redis.call('PEXPIRE', key, expires)
  end
  if group_expires > 0 then
    redis.call('PEXPIRE', group_key, group_expires)
  end
end

local total_diff = redis.call('GET', total_diff_key)
local size = redis.call('GET', size_key)
if size and ready == tonumber(size) + tonumber(total_diff or 0)
    and redis.call('SET', claim_key, token, 'NX', 'PX', claim_expires) then
  if ordered then
    return {ready, total_diff, size, 1, redis.call('ZRANGE', results, 0, -1, 'WITHSCORES')}
  end
  return {ready, total_diff, size, 1, redis.call('LRANGE', results, 0, -1)}
end
return {ready, total_diff, size, 0, {}}
