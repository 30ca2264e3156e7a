-- GET over many resources: PREFIX0.json .. PREFIX(N-1).json, in a random order per thread.
-- args: prefix, N
local dir = os.getenv("BENCH_WRK_DIR") or "bench/wrk"
local common = dofile(dir .. "/common.lua")
done, setup = common.done, common.setup

local prefix, n = "/g/", 1000000
thread_id = 0   -- set per thread by setup()

function init(args)
  prefix = args[1] or prefix
  n = tonumber(args[2] or n)
  math.randomseed(os.time() + thread_id)
end

function request()
  return wrk.format("GET", prefix .. math.random(0, n - 1) .. ".json")
end
