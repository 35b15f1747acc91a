-- Keep an attempt's lease before its next provider call: while ``owner`` still holds lease
-- number ``lease``, the lease runs until ``lease_ms`` from now (never shortened).
-- The in-flight deadline is the lease end or, sooner, ``check_ms`` from now (lease.lua).
-- Returns the ms the lease has left, or 'lost' (another attempt holds it, or it is over).
-- keys: message inflight
-- args: owner lease# lease_ms# check_ms# member
-- include: lib

local s = redis.call('HMGET', message, 'state', 'leaseOwner', 'lease', 'leaseUntil')
if s[1] ~= 'processing' or s[2] ~= owner or tonumber(s[3] or '0') ~= lease then return 'lost' end
local now = now_ms()
local until_ms = math.max(now + lease_ms, tonumber(s[4] or '0'))
redis.call('HSET', message, 'leaseUntil', until_ms)
redis.call('ZADD', inflight, math.min(until_ms, now + check_ms), member)
return until_ms - now
