-- Snapshot write, whole or incremental, fenced (docs/snapshots.md).
-- KEYS[1]  snapshot key ({prefix}:snap:{session}), a hash:
--            gen    generation of the stored snapshot (unique per write)
--            head   envelope: meta + the engine bytes (whole), or the engine
--                   skeleton (incremental: SINK and WIND payloads cut out)
--            slots  incremental only: window slots held, n
--            sink   incremental only: the SINK payload
--            w:J    incremental only: window slot J (0 <= J < n)
-- KEYS[2]  epoch key ({prefix}:epoch:{group}:{topic}:{partition}): ownership epoch
--          of the session's partition (any key when unfenced)
-- ARGV[1]  the writer's epoch for that partition; "" = unfenced
-- ARGV[2]  TTL in seconds
-- ARGV[3]  base generation: "" = a whole write (replaces the hash); else the
--          generation this delta applies to
-- ARGV[4]  the new generation
-- ARGV[5..] field, value pairs (head, slots, sink, w:J)
-- Returns 1 when written; 0 when refused because a newer owner claimed the
-- partition (this writer is stale); -1 when the base generation is not the
-- stored one (another writer, a lost key): the caller writes it whole.
-- One script, so a reader (load-snapshot.lua) never sees half a write.
if ARGV[1] ~= "" then
  local current = tonumber(redis.call("GET", KEYS[2]) or "0")
  if tonumber(ARGV[1]) < current then
    return 0
  end
end
if ARGV[3] == "" then
  redis.call("DEL", KEYS[1])
elseif redis.call("HGET", KEYS[1], "gen") ~= ARGV[3] then
  return -1
end
redis.call("HSET", KEYS[1], "gen", ARGV[4])
-- Pair by pair: unpack() of thousands of slots would overflow Lua's stack.
for i = 5, #ARGV, 2 do
  redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call("EXPIRE", KEYS[1], ARGV[2])
return 1
