-- Snapshot read, in one step (never half of a write).
-- KEYS[1]  snapshot key ({prefix}:snap:{session})
-- Returns the hash's fields and values (save-snapshot.lua), {"head", value}
-- for a snapshot stored whole as a plain string by an earlier version, or
-- an empty array when there is none.
local kind = redis.call("TYPE", KEYS[1]).ok
if kind == "hash" then
  return redis.call("HGETALL", KEYS[1])
elseif kind == "string" then
  return { "head", redis.call("GET", KEYS[1]) }
end
return {}
