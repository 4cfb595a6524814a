-- Delete a chord's results and counters once its body is sent, if the caller's claim
-- still holds it, and mark the chord done so late header results are ignored
-- (wire protocol §7.3, as Celery 5.7's cleanup).
--
-- KEYS: G.c (claim), G.j, G.t, G.s, G.d. ARGV: claim token, "done" expiry in ms.
-- Returns 1 when cleaned up, 0 when the claim was lost and nothing was deleted.
local claim_key = KEYS[1]
local token, done_expires = ARGV[1], tonumber(ARGV[2])

if redis.call('GET', claim_key) ~= token then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SET', claim_key, 'done', 'PX', done_expires)
return 1
