-- `make bench`: POST /v1/track with a ~600-byte purchase event whose event_id never repeats.
--
--   wrk -t2 -c16 -d10s -s bench/track.lua -H 'Content-Type: application/json' ... URL -- <tag> <template>
--
-- <tag> is unique per wrk run; <template> is a file holding the JSON body with @ID@ wherever the
-- id goes (the event_id, and the order_id: every purchase is an order of its own). Each request's id is <tag>-t<thread>-<counter>, so ids collide neither across wrk's
-- threads (each has its own Lua state and counter) nor across runs against the same database.
-- Headers come from -H (wrk.headers). done() prints one machine-readable line starting "BENCH ";
-- bench/run.py parses it and fails the bench on any non-2xx or socket error, because wrk itself
-- exits 0 even when every response is an error.

local threads = 0
local counter = 0
local parts, prefix

function setup(thread)                      -- runs in the main Lua state, once per wrk thread
  threads = threads + 1
  thread:set("thread_number", threads)
end

function init(args)                         -- runs in each thread's own Lua state
  local tag, path = args[1], args[2]
  assert(tag and path, "usage: wrk ... URL -- <tag> <template file>")
  local file = assert(io.open(path, "rb"))
  local template = file:read("*a")
  file:close()
  parts = {}
  local from = 1
  while true do
    local at = template:find("@ID@", from, true)
    if not at then break end
    parts[#parts + 1] = template:sub(from, at - 1)
    from = at + 4
  end
  assert(#parts > 0, "the template has no @ID@")
  parts[#parts + 1] = template:sub(from)
  prefix = tag .. "-t" .. thread_number .. "-"
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/v1/track", nil, table.concat(parts, prefix .. counter))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d bytes=%d non2xx=%d connect=%d read=%d write=%d timeout=%d " ..
    "p50_us=%d p90_us=%d p99_us=%d max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
