-- wrk script: POST one ~120-byte event per request, varied sources, types and levels.
-- Usage: wrk -t2 -c64 -d15s -s scripts/wrk/post_event.lua http://127.0.0.1:3000
local types = { "GAS", "SMOKE", "DOOR", "TEMP" }
local levels = { "INFO", "WARN", "ERROR", "CRITICAL" }
local counter = 0

request = function()
  counter = counter + 1
  local body = string.format(
    '{"source":"site-3/gateway-%d/sensor-%d","type":"%s","level":"%s","payload":{"ppm":%d,"battery":0.%d}}',
    counter % 17, counter % 101, types[counter % 4 + 1], levels[math.floor(counter / 4) % 4 + 1],
    100 + counter % 400, counter % 97 + 1)
  return wrk.format("POST", "/api/events", { ["Content-Type"] = "application/json" }, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
