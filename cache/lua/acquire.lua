-- acquire: start a conditional write (SPEC §5.1). One round trip, O(1) apart from the tag lists
-- and the bounded variants.
-- ARGV[4] lease token, ARGV[5] lease TTL in ms
-- ARGV[6] two characters: If-Match kind, If-None-Match kind; each n (none) | a (*) | l (list)
-- ARGV[7] If-Unmodified-Since (decimal epoch seconds) or '' when absent
-- ARGV[8] number N of If-Match tags; ARGV[9 .. 8+N] If-Match tags; ARGV[9+N ..] If-None-Match tags
-- Returns {status, s, e, m, l}: status recovering | busy | unknown | ok | mismatch, the state it was
-- decided on and the variant's tag (or another variant's, for the 409 body), and the fleet's
-- longest lease as the epoch records it.
-- Mirrors ifm::cache::evaluate (cache/condition.hpp) over all variants' tags.

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

if recovering(ARGV[5]) then return {'recovering', '', '', '', fleet_lease()} end

local h = redis.call('HGETALL', KEYS[1])
local f, tags = {}, {}
for i = 1, #h, 2 do
  f[h[i]] = h[i + 1]
  if h[i]:sub(1, 2) == 'v:' then tags[#tags + 1] = h[i + 1] end
end
local s, m = f['s'] or '', f['m'] or ''
if s ~= 'a' and s ~= 'p' then s, m = '', '' end
local e = f['v:' .. ARGV[3]] or tags[1] or ''

local function take(status)
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5])
  redis.call('HSET', KEYS[1], 'w', ARGV[4])
  touch(2 * tonumber(ARGV[5]))
  return {status, s, e, m, fleet_lease()}
end

if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'busy', s, e, m, fleet_lease()}
end
-- w: a write took the lease and never committed (its proxy crashed or lost the store): its
-- outcome is unknown, so the pre-write state must not be trusted (I3). Moving the generation
-- also stops a read that started before that write from recording.
if f['w'] then
  wipe()
  redis.call('HDEL', KEYS[1], 'w')
  redis.call('HSET', KEYS[1], 'g', next_generation(f['g']))
  s, e, m, tags = '', '', '', {}
end
if s == '' then return take('unknown') end

local present = s == 'p'
local im, inm = ARGV[6]:sub(1, 1), ARGV[6]:sub(2, 2)
local n = tonumber(ARGV[8])
local pass = true

if im == 'a' then
  pass = present
elseif im == 'l' then
  -- strong comparison against every variant's tag (stored tags are never weak)
  pass = false
  if present then
    for _, t in ipairs(tags) do
      for i = 9, 8 + n do
        if ARGV[i] == t and t:sub(1, 2) ~= 'W/' then pass = true end
      end
    end
  end
elseif ARGV[7] ~= '' and present and m ~= '' then
  pass = int_le(m, ARGV[7])  -- no Last-Modified known: the header is ignored (RFC 9110 §13.1.4)
end

if pass then
  if inm == 'a' then
    pass = not present
  elseif inm == 'l' and present then
    -- weak comparison: opaque parts only
    for _, t in ipairs(tags) do
      for i = 9 + n, #ARGV do
        if opaque(ARGV[i]) == opaque(t) then pass = false end
      end
    end
  end
end

if pass then return take('ok') end
-- A variant's validator went unrecorded (MAX_VARIANTS, or its read could not record it): the tag
-- may be current there. Ask the origin rather than refuse a tag just received (I2).
if present and (im == 'l' or inm == 'l') and (f['o'] or not f['v:' .. ARGV[3]]) then return take('unknown') end
return {'mismatch', s, e, m, fleet_lease()}
