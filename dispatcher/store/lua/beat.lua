-- One heartbeat of a process that takes leases: its last beat is now (Redis's clock).
-- Entries older than ``keep_ms`` (processes long gone) leave the set, which stays bounded.
-- Returns now (ms).
-- keys: beats
-- args: process keep_ms#
-- include: lib

local now = now_ms()
redis.call('ZADD', beats, now, process)
redis.call('ZREMRANGEBYSCORE', beats, '-inf', now - keep_ms)
return now
