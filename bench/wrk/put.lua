-- PUT over N resources (PREFIX0.json .. PREFIX(N-1).json), each wrk thread owning a disjoint share,
-- taken round-robin so that a resource is never written twice at once.
-- args: prefix, N, threads, mode
--   mode "valid": If-Match carries the resource's current ETag, learnt from the previous write's
--                 response (X-Resource names the resource); "*" until one is known.
--   mode "stale": If-Match carries a tag that never matches: every write is rejected (409).
--   mode "fixed": If-Match carries args[5] on every write (scenario 3b: the resources never change).
local dir = os.getenv("BENCH_WRK_DIR") or "bench/wrk"
local common = dofile(dir .. "/common.lua")
done, setup = common.done, common.setup

local prefix, n, nthreads, mode, fixed = "/w/", 1000, 1, "valid", nil
thread_id = 0   -- set per thread by setup()
local first, count, next_index = 0, 0, 0
local tags = {}
local body = '{"value":"' .. string.rep("x", 1010) .. '"}'   -- 1 KB

function init(args)
  prefix = args[1] or prefix
  n = tonumber(args[2] or n)
  nthreads = tonumber(args[3] or nthreads)
  mode = args[4] or mode
  fixed = args[5]
  first = math.floor(n * thread_id / nthreads)
  count = math.floor(n * (thread_id + 1) / nthreads) - first
end

local function header(headers, name)
  return headers[name] or headers[name:lower()]
end

function request()
  local path = prefix .. (first + next_index) .. ".json"
  next_index = (next_index + 1) % count
  local tag = '"stale"'
  if mode == "valid" then tag = tags[path] or "*" end
  if mode == "fixed" then tag = fixed end
  return wrk.format("PUT", path, {["If-Match"] = tag, ["Content-Type"] = "application/json"}, body)
end

-- Defined in both modes so that wrk does the same work per response.
function response(status, headers, body)
  local path = header(headers, "X-Resource")
  local tag = header(headers, "ETag")
  if path and tag then tags[path] = tag end
end
