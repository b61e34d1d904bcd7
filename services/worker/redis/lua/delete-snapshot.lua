-- Fenced snapshot delete (the session was closed), leaving a tombstone.
-- KEYS[1]  snapshot key  ({prefix}:snap:{session})
-- KEYS[2]  epoch key     ({prefix}:epoch:{group}:{topic}:{partition})
-- ARGV[1]  the deleter's epoch for that partition
-- ARGV[2]  input offset of the close record; "" = no tombstone, just delete
-- ARGV[3]  tombstone TTL in seconds
-- The tombstone (a hash with one field, tomb = the close offset) tells a new
-- owner that replays the log that the session was closed there, so it skips
-- the close instead of applying it again to a session that no longer exists
-- (whose result would differ from the first run's). The next snapshot of a
-- re-created session replaces it.
-- Returns 1 when done (also when nothing was stored), 0 when refused: a
-- newer owner claimed the partition and may have re-created the session.
local current = tonumber(redis.call("GET", KEYS[2]) or "0")
if tonumber(ARGV[1]) < current then
  return 0
end
redis.call("DEL", KEYS[1])
if ARGV[2] ~= "" then
  redis.call("HSET", KEYS[1], "tomb", ARGV[2])
  redis.call("EXPIRE", KEYS[1], ARGV[3])
end
return 1
