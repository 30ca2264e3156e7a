-- acquire: start a conditional write (SPEC §5.1). One round trip, O(1) apart from the tag lists.
-- KEYS[1] resource hash (s: a|p, missing = unknown; e: etag; m: last-modified; g: generation)
-- KEYS[2] lease (string token, PX TTL)
-- ARGV[1] lease token, ARGV[2] lease TTL in ms
-- ARGV[3] two characters: If-Match kind, If-None-Match kind; each n (none) | a (*) | l (list)
-- ARGV[4] If-Unmodified-Since (decimal epoch seconds) or '' when absent
-- ARGV[5] number N of If-Match tags; ARGV[6 .. 5+N] If-Match tags; ARGV[6+N ..] If-None-Match tags
-- Returns {status, s, e, m}: status busy | unknown | ok | mismatch, and the state it was decided on.
-- Mirrors ifm::cache::evaluate (cache/condition.hpp); tests/redis/store_test.cpp checks both agree.

-- a <= b for canonical decimal integers (as std::to_string writes them), exact beyond 2^53
-- where Lua's doubles would round.
local function int_le(a, b)
  local na, nb = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if na ~= nb then return na end
  if na then a, b = b:sub(2), a:sub(2) end
  if #a ~= #b then return #a < #b end
  return a <= b
end

-- W/"x" -> "x"
local function opaque(t)
  if t:sub(1, 2) == 'W/' then return t:sub(3) end
  return t
end

local st = redis.call('HMGET', KEYS[1], 's', 'e', 'm', 'w')
local s, e, m = st[1] or '', st[2] or '', st[3] or ''
if s ~= 'a' and s ~= 'p' then s, e, m = '', '', '' end

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'busy', s, e, m}
end
-- w: a write took the lease and never committed (its proxy crashed or lost the store): its
-- outcome is unknown, so the pre-write state must not be trusted (I3).
-- Moving the generation also stops a read that started before that write from recording.
if st[4] then
  if redis.replicate_commands then redis.replicate_commands() end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local g = tonumber(redis.call('HGET', KEYS[1], 'g') or '0') or 0
  redis.call('HDEL', KEYS[1], 's', 'e', 'm', 'w')
  redis.call('HSET', KEYS[1], 'g', string.format('%.0f', math.max(g + 1, now)))
  s, e, m = '', '', ''
end
if s == '' then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  redis.call('HSET', KEYS[1], 'w', ARGV[1])
  return {'unknown', s, e, m}
end

local present = s == 'p'
local has_tag = present and e ~= ''  -- an empty etag: exists, tag unknown; matches no list
local im, inm = ARGV[3]:sub(1, 1), ARGV[3]:sub(2, 2)
local n = tonumber(ARGV[5])
local pass = true

if im == 'a' then
  pass = present
elseif im == 'l' then
  -- strong comparison: a weak stored tag never matches
  pass = false
  if has_tag and e:sub(1, 2) ~= 'W/' then
    for i = 6, 5 + n do
      if ARGV[i] == e then pass = true break end
    end
  end
elseif ARGV[4] ~= '' and present and m ~= '' then
  pass = int_le(m, ARGV[4])  -- no Last-Modified known: the header is ignored (RFC 9110 §13.1.4)
end

if pass then
  if inm == 'a' then
    pass = not present
  elseif inm == 'l' and has_tag then
    -- weak comparison: opaque parts only
    local current = opaque(e)
    for i = 6 + n, #ARGV do
      if opaque(ARGV[i]) == current then pass = false break end
    end
  end
end

if not pass then
  return {'mismatch', s, e, m}
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], 'w', ARGV[1])
return {'ok', s, e, m}
