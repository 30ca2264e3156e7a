-- commit: end a write (SPEC §5.4).
-- ARGV[4] token, ARGV[5] outcome (set | keep | unknown), ARGV[6] s ('' | a | p), ARGV[7] etag,
-- ARGV[8] last-modified ('' none), ARGV[9] hold: 0 releases the lease, N > 0 keeps it for at
-- most N ms more (a write the origin may still apply must not be overtaken).
-- Token holds the lease: apply the outcome, return 1. Otherwise the write's effect is unknown:
-- forget the state, leave the current holder's lease alone, return 0. Either way the generation
-- moves, so a snapshot taken before can never match a later generation.
-- The same effect as wipe() + record() (prelude) and HSET g, computed here from one HGETALL and
-- written with one HDEL and one HSET: Redis's cost of a script is mostly its redis.call()s.
local h = redis.call('HGETALL', KEYS[1])
local cur = {}
for i = 1, #h, 2 do cur[h[i]] = h[i + 1] end
local g = next_generation(cur['g'])
local held = redis.call('GET', KEYS[2]) == ARGV[4]

local new = {g = g}  -- the fields after the commit (cur's are deleted unless kept here)
if held and ARGV[5] == 'keep' then
  for f, v in pairs(cur) do
    if f ~= 'w' and f ~= 'g' then new[f] = v end
  end
elseif held and ARGV[5] == 'set' then
  -- record(s, e, m) on a wiped hash: only this variant's tag survives.
  local s, e, m = ARGV[6], ARGV[7], ARGV[8]
  if s ~= '' then
    new['s'] = s
    if m ~= '' then new['m'] = m end
    if s == 'p' and e ~= '' then new['v:' .. ARGV[3]] = e end
  end
elseif not held then
  new['w'] = cur['w']  -- wipe() keeps another write's (or an expired own) uncommitted marker
end

local del, set = {}, {}
for f, v in pairs(cur) do
  if new[f] == nil then del[#del + 1] = f end
end
for f, v in pairs(new) do
  if cur[f] ~= v then
    set[#set + 1] = f
    set[#set + 1] = v
  end
end
if #del > 0 then redis.call('HDEL', KEYS[1], unpack(del)) end
if #set > 0 then redis.call('HSET', KEYS[1], unpack(set)) end

if held then
  local hold = tonumber(ARGV[9]) or 0
  if hold > 0 then
    if redis.call('PTTL', KEYS[2]) > hold then redis.call('PEXPIRE', KEYS[2], hold) end
  else
    redis.call('DEL', KEYS[2])
  end
end
touch(0)
if held then return 1 end
return 0
