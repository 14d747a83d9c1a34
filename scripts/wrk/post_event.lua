-- wrk script: POST one ~120-byte event per request, varied sources, types and levels.
-- Usage: wrk -t2 -c64 -d15s -s scripts/wrk/post_event.lua http://127.0.0.1:3000
-- With VIGIL_WRK_IDEMPOTENCY=1 every request carries a fresh Idempotency-Key (unique per
-- thread and run), to measure what recording keys costs.
local keyed = os.getenv("VIGIL_WRK_IDEMPOTENCY") == "1"
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local types = { "GAS", "SMOKE", "DOOR", "TEMP" }
local levels = { "INFO", "WARN", "ERROR", "CRITICAL" }
local counter = 0
run_id = os.time()
thread_id = 0

request = function()
  counter = counter + 1
  local body = string.format(
    '{"source":"site-3/gateway-%d/sensor-%d","type":"%s","level":"%s","payload":{"ppm":%d,"battery":0.%d}}',
    counter % 17, counter % 101, types[counter % 4 + 1], levels[math.floor(counter / 4) % 4 + 1],
    100 + counter % 400, counter % 97 + 1)
  local headers = { ["Content-Type"] = "application/json" }
  if keyed then
    headers["Idempotency-Key"] = string.format("wrk-%d-%d-%d", run_id, thread_id, counter)
  end
  return wrk.format("POST", "/api/events", headers, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
