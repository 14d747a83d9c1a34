-- wrk script: POST the JSON array in the file named by BULK_FILE (default /tmp/vigil-bulk-1000.json).
-- Usage: BULK_FILE=... wrk -t1 -c4 -d15s -s scripts/wrk/post_bulk.lua http://127.0.0.1:3000
local path = os.getenv("BULK_FILE") or "/tmp/vigil-bulk-1000.json"
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

request = function()
  return wrk.format("POST", "/api/events", { ["Content-Type"] = "application/json" }, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
