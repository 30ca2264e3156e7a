-- prelude: prepended to every store script (cache/redis_store.cpp). Mirrors cache/memory_store.cpp;
-- tests/redis/store_test.cpp runs one suite against both.
-- KEYS[1] resource hash: g generation, w uncommitted writer's token, s state (a | p; missing:
--         unknown), m last-modified, o a variant's validator was not recorded, v:<variant> etag
-- KEYS[2] lease (string token, PX TTL)
-- KEYS[3] epoch (hash: r ready-at in µs of server time, l longest lease in ms): missing after a
--         restart without persistence or a FLUSHALL, when leases of writes still at the origin
--         were lost; writes then wait until every such lease would have expired (SPEC §5.5).
-- ARGV[1] the longest lease the caller knows the fleet to take (ms), ARGV[2] validator TTL (ms),
-- ARGV[3] variant; script arguments follow from ARGV[4].
if redis.replicate_commands then redis.replicate_commands() end  -- Redis < 5: TIME before writes
local MAX_VARIANTS = 8

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])  -- ~1.7e15, exact in a double (< 2^53)
end

-- True while writes must wait for leases the store may have lost. The first caller that finds the
-- epoch missing starts the wait: ARGV[1], the fleet's longest lease as it knows it (0 from a proxy
-- that never saw this store's epoch and trusts a new store: store.young_server_wait false).
-- `lease` (the caller's own) raises the longest lease recorded in the epoch, which acquire returns
-- so that every proxy learns the fleet's longest lease before a loss.
-- ARGV[1] = 0 comes only from a proxy that never saw this store's epoch and trusts a new store
-- (young_server_wait: false): it starts an epoch that is ready at once, read or write. (The memory
-- backend, which never loses data in production, reads 0 as "unknown" instead: the simulator
-- passes it after a loss.)
local epoch_lease = nil  -- the epoch's longest lease (ms) as recovering() left it
local function recovering(lease)
  local ep = redis.call('HMGET', KEYS[3], 'r', 'l')
  local now = now_us()
  local wait = tonumber(ARGV[1]) or 0
  local l = math.max(wait, tonumber(lease) or 0)
  if not ep[1] then
    redis.call('HSET', KEYS[3], 'r', string.format('%.0f', now + wait * 1000), 'l', l)
    epoch_lease = tostring(l)
    return wait > 0
  end
  if l > (tonumber(ep[2]) or 0) then
    redis.call('HSET', KEYS[3], 'l', l)
    epoch_lease = tostring(l)
  else
    epoch_lease = ep[2] or '0'
  end
  return now < tonumber(ep[1])
end

-- The longest lease the epoch records (ms): what recovering() read or wrote, without asking again.
local function fleet_lease()
  return epoch_lease or redis.call('HGET', KEYS[3], 'l') or '0'
end

-- `current`: the resource's g field as the caller read it (nil or false: none yet).
local function next_generation(current)
  local g = tonumber(current or '0') or 0
  return string.format('%.0f', math.max(g + 1, now_us()))  -- never repeats, even across data loss
end

-- Forgets every variant's validator and the state (keeps g and w).
local function wipe()
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if f ~= 'g' and f ~= 'w' then redis.call('HDEL', KEYS[1], f) end
  end
end

-- Records state (s, e, m) for ARGV[3]'s variant. A changed existence, or a tag that differs from
-- the one recorded for the same variant, means the resource changed: the others go. Returns
-- false when the variant's tag was not recorded (MAX_VARIANTS).
local function record(s, e, m)
  local field = 'v:' .. ARGV[3]
  local cur_s = redis.call('HGET', KEYS[1], 's') or ''
  local cur_e = false
  if s == 'p' and e ~= '' then cur_e = redis.call('HGET', KEYS[1], field) end
  if s ~= cur_s or (cur_e and cur_e ~= e) then
    wipe()
    cur_e = false
  end
  if s == '' then return true end
  redis.call('HSET', KEYS[1], 's', s)
  if m == '' then redis.call('HDEL', KEYS[1], 'm') else redis.call('HSET', KEYS[1], 'm', m) end
  if s ~= 'p' or e == '' or cur_e == e then return true end
  local n = 0
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    if f:sub(1, 2) == 'v:' then n = n + 1 end
  end
  if n >= MAX_VARIANTS then
    redis.call('HSET', KEYS[1], 'o', '1')
    return false
  end
  redis.call('HSET', KEYS[1], field, e)
  return true
end

local function touch(ttl)
  redis.call('PEXPIRE', KEYS[1], math.max(tonumber(ARGV[2]), tonumber(ttl) or 0))
end
