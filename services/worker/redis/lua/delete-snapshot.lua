-- Fenced snapshot delete (the session was closed).
-- KEYS[1]  snapshot key  ({prefix}:snap:{session})
-- KEYS[2]  epoch key     ({prefix}:epoch:{group}:{topic}:{partition})
-- ARGV[1]  the deleter's epoch for that partition
-- Returns 1 when deleted (or already absent), 0 when refused: a newer owner
-- claimed the partition and may have re-created the session since.
local current = tonumber(redis.call("GET", KEYS[2]) or "0")
if tonumber(ARGV[1]) < current then
  return 0
end
redis.call("DEL", KEYS[1])
return 1
