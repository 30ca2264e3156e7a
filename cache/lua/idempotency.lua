-- Idempotency records (SPEC §9, proxy/idempotency.hpp); no prelude: they do not touch the
-- resource, its lease or the epoch. Mirrors memory_backend::idem_* (cache/memory_store.cpp).
-- KEYS[1] the record (hash: f fingerprint, o owner token, c the completed response; no c: in flight)
-- ARGV[1] begin | complete | forget
--   begin:    ARGV[2] fingerprint, ARGV[3] owner, ARGV[4] in-flight TTL (ms) -> {status, response}
--   complete: ARGV[2] owner, ARGV[3] response, ARGV[4] TTL (ms)            -> 1 if owned, else 0
--   forget:   ARGV[2] owner                                                 -> 1 if owned, else 0
local op = ARGV[1]
if op == 'begin' then
  local rec = redis.call('HMGET', KEYS[1], 'f', 'c')
  if not rec[1] then
    redis.call('HSET', KEYS[1], 'f', ARGV[2], 'o', ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return {'reserved', ''}
  end
  if rec[1] ~= ARGV[2] then return {'mismatch', ''} end
  if not rec[2] then return {'in_flight', ''} end
  return {'completed', rec[2]}
end
if redis.call('HGET', KEYS[1], 'o') ~= ARGV[2] then return 0 end
if op == 'complete' then
  redis.call('HSET', KEYS[1], 'c', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return 1
