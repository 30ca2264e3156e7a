-- observe: record a validator seen on a GET/HEAD response, only if no write is in flight and none
-- committed since the snapshot (else a slow read could record a pre-write validator).
-- ARGV[4] generation from the snapshot (decimal), ARGV[5] s ('' | a | p), ARGV[6] etag,
-- ARGV[7] last-modified ('' none). Returns 1 if recorded.
if recovering(nil) then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HEXISTS', KEYS[1], 'w') == 1 then
  return 0
end
if (redis.call('HGET', KEYS[1], 'g') or '0') ~= ARGV[4] then
  return 0
end
-- A 404 of a resource nobody tracks is not recorded: strangers could fill the store.
if ARGV[5] == 'a' and redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local recorded = record(ARGV[5], ARGV[6], ARGV[7])
touch(0)
if recorded then return 1 end
return 0
