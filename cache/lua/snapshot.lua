-- snapshot: what a read sees before it is forwarded (SPEC §5.5). KEYS[1] resource hash, KEYS[2] lease.
-- Returns {s, e, m, g, leased}: '' for missing fields, g '0' when never committed, leased 0|1.
-- An uncommitted write whose lease is gone (w without a lease) leaves the state unknown.
local st = redis.call('HMGET', KEYS[1], 's', 'e', 'm', 'g', 'w')
local leased = redis.call('EXISTS', KEYS[2])
if st[5] and leased == 0 then
  return {'', '', '', st[4] or '0', 0}
end
return {st[1] or '', st[2] or '', st[3] or '', st[4] or '0', leased}
