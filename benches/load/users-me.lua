-- wrk script of the load benchmark (benches/load/run): GET /users/me with a bearer token picked
-- at random per request from a file of tokens (one a line), so the load is spread over the users.
-- The requests are formatted once per thread in init(); request() only picks one.
--
--   wrk -t2 -c64 -d15s -s users-me.lua http://127.0.0.1:PORT -- TOKENS_FILE
--
-- done() prints one machine-readable line starting with RESULT (latencies in microseconds).

local counter = 0
local threads = {}

function setup(thread)
   counter = counter + 1
   thread:set("thread_id", counter)
   table.insert(threads, thread)
end

local requests = {}

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s users-me.lua URL -- TOKENS_FILE")
   end
   for line in io.lines(path) do
      if #line > 0 then
         requests[#requests + 1] = wrk.format("GET", "/users/me", { ["Authorization"] = "Bearer " .. line })
      end
   end
   if #requests == 0 then
      error("no tokens in " .. path)
   end
   math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
   return requests[math.random(#requests)]
end

function done(summary, latency, requests)
   local secs = summary.duration / 1e6
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d seconds=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.0f non2xx=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
      summary.requests, secs, summary.requests / secs,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean,
      e.status, e.connect, e.read, e.write, e.timeout))
end
