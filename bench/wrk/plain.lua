-- A fixed request (wrk's fast path: no Lua per request), with the JSON report.
local dir = os.getenv("BENCH_WRK_DIR") or "bench/wrk"
done = dofile(dir .. "/common.lua").done
