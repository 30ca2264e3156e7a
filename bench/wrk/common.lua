-- Shared by every bench script: done() prints one JSON line that bench/run parses; setup()
-- numbers the threads (the global thread_id in each thread's Lua state, 0, 1, ...).
local report = {}
local threads = 0

function report.setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function report.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"rps":%.1f,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,' ..
    '"bytes":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency.mean,
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout))
end

return report
