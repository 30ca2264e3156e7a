-- commit: end a write (SPEC §5.4). KEYS[1] resource hash, KEYS[2] lease.
-- ARGV[1] token, ARGV[2] outcome (set | keep | unknown), ARGV[3] s ('' | a | p), ARGV[4] etag,
-- ARGV[5] last-modified ('' none).
-- Token holds the lease: apply the outcome, release the lease, return 1. Otherwise the write's
-- effect is unknown: forget the state, leave the current holder's lease alone, return 0.
-- Either way the generation moves to max(g + 1, server time in µs): it never repeats, even after
-- Redis lost its data, so a snapshot taken before can never match a later generation.
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5: TIME before writes

local function set_state(s, e, m)
  if s == '' then
    redis.call('HDEL', KEYS[1], 's', 'e', 'm')
    return
  end
  redis.call('HSET', KEYS[1], 's', s, 'e', e)
  if m == '' then redis.call('HDEL', KEYS[1], 'm') else redis.call('HSET', KEYS[1], 'm', m) end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])  -- ~1.7e15, exact in a double (< 2^53)
local g = tonumber(redis.call('HGET', KEYS[1], 'g') or '0') or 0
g = math.max(g + 1, now)

local held = redis.call('GET', KEYS[2]) == ARGV[1]
if held then
  if ARGV[2] == 'set' then
    set_state(ARGV[3], ARGV[4], ARGV[5])
  elseif ARGV[2] == 'unknown' then
    set_state('', '', '')
  end
  redis.call('DEL', KEYS[2])
  redis.call('HDEL', KEYS[1], 'w')
else
  set_state('', '', '')
end
-- %.0f: tostring() would print 1.7e+15
redis.call('HSET', KEYS[1], 'g', string.format('%.0f', g))
if held then return 1 end
return 0
