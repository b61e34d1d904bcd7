-- Fenced snapshot write.
-- KEYS[1]  snapshot key  ({prefix}:snap:{session}): the envelope bytes
-- KEYS[2]  epoch key     ({prefix}:epoch:{group}:{topic}:{partition}): ownership epoch of the session's partition,
--                        incremented by each worker that gains the partition
-- ARGV[1]  envelope bytes
-- ARGV[2]  the writer's epoch for that partition
-- ARGV[3]  TTL in seconds
-- Returns 1 when written, 0 when refused: a newer owner has claimed the
-- partition, so this writer is stale and must not replace its snapshots.
local current = tonumber(redis.call("GET", KEYS[2]) or "0")
if tonumber(ARGV[2]) < current then
  return 0
end
redis.call("SET", KEYS[1], ARGV[1], "EX", ARGV[3])
return 1
