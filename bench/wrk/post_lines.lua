-- wrk script for the collector bench (bench/collector_bench.py): POST one request body
-- per line of a file, cycling through the file, each with one of a few real browsers'
-- and apps' User-Agent headers (the collector parses them, as it would in production).
--
--   wrk -t1 -c32 -d10s -s post_lines.lua http://host:port -- /v1/events bodies.jsonl
--
-- At the end it writes one JSON line with what the bench needs (wrk's own summary is
-- meant for people): requests, duration, socket errors, non-2xx answers, latencies.

local path, bodies = nil, {}
local counter = 0
local agents = {
  "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Safari/537.36",
  "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
  "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
  "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/129.0.0.0 Mobile Safari/537.36",
  "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0",
}

local next_thread = 0
function setup(thread)
  -- threads start at different lines, so they do not post the same bodies in step
  thread:set("offset", next_thread * 7919)
  next_thread = next_thread + 1
end

function init(args)
  path = args[1]
  for line in io.lines(args[2]) do
    bodies[#bodies + 1] = line
  end
  counter = offset or 0
end

function request()
  counter = counter + 1
  local headers = {
    ["Content-Type"] = "application/json",
    ["User-Agent"] = agents[(counter % #agents) + 1],
  }
  return wrk.format("POST", path, headers, bodies[(counter % #bodies) + 1])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\n{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "timeouts": %d, "non_2xx": %d, ' ..
    '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
