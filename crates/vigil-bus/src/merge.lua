-- Keeps the recent-events list equal to the `keep` entries with the largest ids, largest at the
-- head, whatever order the Vigil instances push in (each instance writes its own id block, so
-- pushes interleave blocks). CACHE.md beside this crate explains why and what the gap hash is.
--
-- KEYS[1]  the recent list
-- KEYS[2]  the gap hash: fields `raised` (gaps marked by publishers) and `repaired` (the
--          largest `raised` value a refill has repaired); a gap is open while raised > repaired
-- ARGV[1]  keep: how many entries the list holds at most
-- ARGV[2]  "push": publish entries, given in increasing id order
--          "refill": entries read from the database, any order; also repairs the gap
-- ARGV[3]  refill ticket: `raised` as the caller saw it before reading the database
-- ARGV[4…] encoded events, each starting with {"id":<digits>,
--
-- Returns the number of entries the list holds afterwards, or -1 for a push that took the fast
-- path (newer than everything in the list: a plain LPUSH + LTRIM).

local list, gap = KEYS[1], KEYS[2]
local keep = tonumber(ARGV[1])
local mode = ARGV[2]
local FIRST = 4
-- Lua's unpack is limited by its C stack; larger argument lists go in chunks.
local CHUNK = 1000
local MAX_ID_EXCLUSIVE = 9007199254740992

local function id_of(entry)
  local digits = string.match(entry, '^{"id":(%d+),')
  if digits == nil or #digits > 16 then
    return nil
  end
  local id = tonumber(digits)
  if id >= MAX_ID_EXCLUSIVE then
    return nil
  end
  return id
end

local function push_in_chunks(command, entries, from, to)
  local i = from
  while i <= to do
    local j = math.min(i + CHUNK - 1, to)
    redis.call(command, list, unpack(entries, i, j))
    i = j + 1
  end
end

if mode == 'push' and #ARGV >= FIRST then
  -- Fast path, the only one a single instance takes: the batch is newer than the head.
  local lowest = id_of(ARGV[FIRST])
  local head = redis.call('LINDEX', list, 0)
  local head_id = head and id_of(head)
  if lowest ~= nil and (not head or (head_id ~= nil and head_id < lowest)) then
    push_in_chunks('LPUSH', ARGV, FIRST, #ARGV)
    redis.call('LTRIM', list, 0, keep - 1)
    return -1
  end
end

-- Merge: the list's entries and the given ones, by id descending, each id once, `keep` at most.
-- Entries without a readable id are dropped.
local merged = {}
local function add(entry)
  local id = id_of(entry)
  if id ~= nil then
    merged[#merged + 1] = { id, entry }
  end
end
for _, entry in ipairs(redis.call('LRANGE', list, 0, -1)) do
  add(entry)
end
for i = FIRST, #ARGV do
  add(ARGV[i])
end
table.sort(merged, function(a, b)
  return a[1] > b[1]
end)
local kept = {}
local last_id = nil
for _, item in ipairs(merged) do
  if #kept >= keep then
    break
  end
  if item[1] ~= last_id then
    kept[#kept + 1] = item[2]
    last_id = item[1]
  end
end
redis.call('DEL', list)
if #kept > 0 then
  push_in_chunks('RPUSH', kept, 1, #kept)
end

if mode == 'refill' then
  -- Gaps raised after the caller's ticket stay open: the caller's database read may predate
  -- the events they lost. Capped by `raised`, so a deleted hash cannot pre-repair future gaps.
  local ticket = tonumber(ARGV[3])
  local raised = tonumber(redis.call('HGET', gap, 'raised') or '0')
  local repaired = tonumber(redis.call('HGET', gap, 'repaired') or '0')
  local repair = math.min(ticket, raised)
  if repair > repaired then
    redis.call('HSET', gap, 'repaired', repair)
  end
end
return #kept
