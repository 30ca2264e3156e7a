-- store_under_lease: record the state fetched from the origin while holding the lease; the other
-- variants' validators are forgotten (the origin may have changed behind the proxy's back).
-- ARGV[4] token, ARGV[5] s ('' unknown | a | p), ARGV[6] etag, ARGV[7] last-modified ('' none).
-- Returns 1 if the token held the lease, else 0.
if redis.call('GET', KEYS[2]) ~= ARGV[4] then
  return 0
end
wipe()
record(ARGV[5], ARGV[6], ARGV[7])
touch(0)
return 1
