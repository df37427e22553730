-- wrk script for benches/load.sh.
--
-- Without arguments: wrk's own request (path and -H headers from the command line) is sent as is.
-- With `-- TOKENS_FILE THREADS`: every request carries `Authorization: Bearer <token>` with a
-- token nobody sent before; thread i (0-based) takes lines i, i+THREADS, i+2*THREADS, ... of the
-- file, so the threads' slices are disjoint. A thread that runs out wraps around and says so.
--
-- done() prints one machine-readable line:
--   RESULT requests=N duration_us=N rps=N p50_us=N p99_us=N non2xx=N socket_errors=N
--   (and `wrapped=N` when the tokens ran out, so some requests were cache hits).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

-- Requests pre-formatted in init(): formatting one per request in Lua (wrk.format, string
-- concatenation) cost wrk about 30 µs of CPU per request on the benchmark machine, CPU that nginx
-- and jwtgate share with it on 2 cores, so it would have lowered case c for reasons that are not
-- jwtgate's. ~75,000 requests of ~1 KB per thread fit easily in memory.
local requests = nil
local next_request_index = 1
wrapped = 0 -- global: done() reads it with thread:get

local function next_request()
  local r = requests[next_request_index]
  next_request_index = next_request_index + 1
  if next_request_index > #requests then
    next_request_index = 1
    wrapped = wrapped + 1
  end
  return r
end

function init(args)
  if args[1] == nil then
    -- No `request` function: wrk sends its static request, as fast as without a script.
    return
  end
  local nthreads = tonumber(args[2])
  requests = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % nthreads == id and #line > 0 then
      requests[#requests + 1] = wrk.format(nil, wrk.path, { ["Authorization"] = "Bearer " .. line })
    end
    n = n + 1
  end
  if #requests == 0 then
    error("no tokens for thread " .. id .. " in " .. args[1])
  end
  request = next_request
end

function done(summary, latency, requests)
  local total_wrapped = 0
  for _, thread in ipairs(threads) do
    total_wrapped = total_wrapped + (thread:get("wrapped") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p99_us=%d non2xx=%d socket_errors=%d wrapped=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout, total_wrapped))
end
