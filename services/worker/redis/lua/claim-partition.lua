-- Claims an input partition for a new owner: its new ownership epoch.
-- KEYS[1]  epoch key ({prefix}:epoch:{group}:{topic}:{partition})
-- Returns the new epoch: above every epoch handed out before, also after the
-- key was lost (Redis killed without persistence). Epochs are seeded from
-- Redis's own clock (microseconds), so a claim after a restart still outranks
-- an owner that claimed before it; the +1 keeps claims within one
-- microsecond apart. (Values stay below 2^53, exact in Lua's doubles.)
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local current = tonumber(redis.call("GET", KEYS[1]) or "0")
local epoch = math.max(current + 1, now)
redis.call("SET", KEYS[1], string.format("%d", epoch))
return epoch
