-- observe: record a validator seen on a GET/HEAD response, only if no write is in flight and none
-- committed since the snapshot (else a slow read could record a pre-write validator).
-- KEYS[1] resource hash, KEYS[2] lease; ARGV[1] generation from the snapshot (decimal),
-- ARGV[2] s ('' | a | p), ARGV[3] etag, ARGV[4] last-modified ('' none). Returns 1 if recorded.
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('HEXISTS', KEYS[1], 'w') == 1 then
  return 0
end
if (redis.call('HGET', KEYS[1], 'g') or '0') ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 's', 'e', 'm')
else
  redis.call('HSET', KEYS[1], 's', ARGV[2], 'e', ARGV[3])
  if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'm') else redis.call('HSET', KEYS[1], 'm', ARGV[4]) end
end
return 1
