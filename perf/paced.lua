-- wrk script: each connection waits PACE_MS (default 1) before its next
-- request, and the summary prints finer percentiles than --latency.
--
--   PACE_MS=4 wrk -t1 -c64 -d5s -s perf/paced.lua http://127.0.0.1:PORT/64k
--
-- A closed loop (no pause) at the proxy's saturation measures queueing more
-- than the proxy: see "p50/p99" under "Reading the results page" in README.md.
--
-- PACE_IDS=1 gives each request a unique query (`?n=ID`), so that
-- perf/segments.py can follow it through a packet capture.
local pace = tonumber(os.getenv("PACE_MS") or "1")

if os.getenv("PACE_IDS") == "1" then
  local n = 0
  request = function()
    n = n + 1
    return wrk.format(nil, wrk.path .. "?n=" .. n)
  end
end

delay = function()
  return pace
end

done = function(summary, latency, requests)
  local s = "percentiles (ms):"
  for _, p in ipairs({ 50, 90, 95, 97, 98, 99, 99.5, 99.9 }) do
    s = s .. string.format(" %s=%.3f", p, latency:percentile(p) / 1000)
  end
  io.write(s .. string.format(" max=%.3f\n", latency.max / 1000))
end
