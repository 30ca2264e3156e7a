-- snapshot: what a read sees before it is forwarded (SPEC §5.6).
-- Returns {s, e, m, g, leased}: '' for missing fields, g '0' when never committed, leased 0|1
-- (1 also while the store may have lost leases). An uncommitted write whose lease is gone (w
-- without a lease) leaves the state unknown.
local rec = recovering(nil)
local st = redis.call('HMGET', KEYS[1], 's', 'v:' .. ARGV[3], 'm', 'g', 'w')
local leased = redis.call('EXISTS', KEYS[2])
if rec then leased = 1 end
if st[5] and leased == 0 then
  return {'', '', '', st[4] or '0', 0}
end
return {st[1] or '', st[2] or '', st[3] or '', st[4] or '0', leased}
