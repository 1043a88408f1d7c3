-- `make bench`: GET one pixel URL (the PitchTarget pixel, or the bare server's GIF route) over and over.
--
--   wrk -t2 -c16 -d10s -s bench/pixel.lua ... URL -- <path and query>
--
-- The pixel mints a new event id (and visitor id) for each call without a cookie, so one URL never repeats
-- an event. done() prints the same machine-readable "BENCH " line as bench/track.lua.

local path

function init(args)
  path = assert(args[1], "usage: wrk ... URL -- <path and query>")
end

function request()
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
