-- wrk script: POSTs one request body, read from a file, to the URL wrk was given, and at the
-- end prints one machine-readable line for bench/serving/serving_bench.py.
--   wrk -t1 -c64 -d8s --latency -s bench/serving/wml_post.lua URL -- BODY_FILE
-- Extra headers (Authorization for the master) come from wrk's -H. No response() hook:
-- a Lua call per response would slow wrk itself; the harness checks the answer once before
-- the load.

function init(args)
  local path = args[1]
  if path == nil then
    error("usage: wrk ... -s wml_post.lua URL -- BODY_FILE")
  end
  local f = assert(io.open(path, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"connect_errors\":%d," ..
    "\"read_errors\":%d,\"write_errors\":%d,\"non_2xx\":%d,\"timeouts\":%d," ..
    "\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
