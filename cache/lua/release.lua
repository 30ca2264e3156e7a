-- release: undo an acquire whose reply did not come within store.timeout. The proxy answered 503
-- and forwarded nothing under this token, but Redis may still run that acquire (it waited in the
-- socket buffer of a slow or stopped server) and would then hold the lease for nobody until it
-- expires, every other write to the resource getting 409 meanwhile. Sent on the same connection
-- right after the timeout, it runs after the acquire. The w marker stays (with on_store_error:
-- fail_open the write did go to the origin, unjudged): the next write revalidates.
-- ARGV[4] the token. Returns 1 if the token held the lease.
if redis.call('GET', KEYS[2]) == ARGV[4] then
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
