-- wrk script for benches/run: GET /saml/sso at a CONSTANT RATE, every request with its own pre-made AuthnRequest
-- (request IDs are single-use, so a URL is never sent twice).
--   wrk -t1 -c16 -d10s --timeout 2s -s benches/sso_rate.lua http://127.0.0.1:PORT -- URLS_FILE RATE_PER_THREAD THREADS [CLASS]
-- URLS_FILE: one path+query per line (/saml/sso?SAMLRequest=...); thread k takes lines k, k+T, k+2T, ...
-- CLASS: the expected status class, 3 (default: a redirect to the upstream) or 2; any other status counts as bad.
-- Rate: each thread hands out send slots every 1000/RATE ms from one schedule (wrk's delay() hook, millisecond
-- timer); connections wait for their slot, so the rate does not depend on latency while latency < slots ahead.
-- Latency is wrk's: from writing the request to the end of the response. done() prints one JSON line.
local ffi = require("ffi")
ffi.cdef [[
struct fg_timeval { long tv_sec; long tv_usec; };
int gettimeofday(struct fg_timeval *tv, void *tz);
]]
local tv = ffi.new("struct fg_timeval")
local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file, rate, nthreads = args[1], tonumber(args[2]), tonumber(args[3])
  class = tonumber(args[4] or "3")
  urls = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then urls[#urls + 1] = line end
    i = i + 1
  end
  idx, sent, ok, bad, reused = 0, 0, 0, 0, 0
  interval = 1000.0 / rate
  next_slot = nil
end

function request()
  idx = idx + 1
  if idx > #urls then idx, reused = 1, reused + 1 end -- ran out: a replayed ID (answered 4xx, counted as bad)
  sent = sent + 1
  return wrk.format("GET", urls[idx])
end

function delay()
  local t = now_ms()
  if next_slot == nil or next_slot < t - 50 then next_slot = t end -- fell behind by > 50 ms: do not burst to catch up
  local d = next_slot - t
  next_slot = next_slot + interval
  if d < 0 then d = 0 end
  return math.floor(d + 0.5)
end

function response(status, headers, body)
  if math.floor(status / 100) == class then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local s_ok, s_bad, s_sent, s_reused = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    s_ok = s_ok + t:get("ok"); s_bad = s_bad + t:get("bad")
    s_sent = s_sent + t:get("sent"); s_reused = s_reused + t:get("reused")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"expected_status":%d,"other_status":%d,"sent":%d,"reused_urls":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"mean_us":%.1f,"stdev_us":%.1f,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f}\n',
    summary.requests, summary.duration, s_ok, s_bad, s_sent, s_reused,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
