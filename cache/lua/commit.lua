-- commit: end a write (SPEC §5.4).
-- ARGV[4] token, ARGV[5] outcome (set | keep | unknown), ARGV[6] s ('' | a | p), ARGV[7] etag,
-- ARGV[8] last-modified ('' none), ARGV[9] hold: 0 releases the lease, N > 0 keeps it for at
-- most N ms more (a write the origin may still apply must not be overtaken).
-- Token holds the lease: apply the outcome, return 1. Otherwise the write's effect is unknown:
-- forget the state, leave the current holder's lease alone, return 0. Either way the generation
-- moves, so a snapshot taken before can never match a later generation.
local g = next_generation()
local held = redis.call('GET', KEYS[2]) == ARGV[4]
if held then
  if ARGV[5] == 'set' then
    wipe()
    record(ARGV[6], ARGV[7], ARGV[8])
  elseif ARGV[5] == 'unknown' then
    wipe()
  end
  local hold = tonumber(ARGV[9]) or 0
  if hold > 0 then
    if redis.call('PTTL', KEYS[2]) > hold then redis.call('PEXPIRE', KEYS[2], hold) end
  else
    redis.call('DEL', KEYS[2])
  end
  redis.call('HDEL', KEYS[1], 'w')
else
  wipe()
end
redis.call('HSET', KEYS[1], 'g', g)
touch(0)
if held then return 1 end
return 0
