-- store_under_lease: record the state fetched from the origin while holding the lease.
-- KEYS[1] resource hash, KEYS[2] lease; ARGV[1] token, ARGV[2] s ('' unknown | a | p),
-- ARGV[3] etag, ARGV[4] last-modified ('' none). Returns 1 if the token held the lease, else 0.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], 's', 'e', 'm')
else
  redis.call('HSET', KEYS[1], 's', ARGV[2], 'e', ARGV[3])
  if ARGV[4] == '' then redis.call('HDEL', KEYS[1], 'm') else redis.call('HSET', KEYS[1], 'm', ARGV[4]) end
end
return 1
