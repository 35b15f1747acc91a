-- Send a dead message round again: dead -> queued, attempts and recovery counts reset.
-- Returns ok, missing or state:<state> (not dead: nothing changed); a re-run of the same
-- call (``op``) after a lost reply answers what the first run did. ``task`` names the task the
-- caller publishes: the message's live task (lease.lua).
-- keys: message history dead inflight
-- args: op? task? ttl# history_limit# member detail queued_grace_ms#
-- include: lib

local again = earlier_reply(message, op)
if again then return again end
local refused = not_dead(message, dead, member)
if refused then return refused end
local now = now_ms()
redis.call('HSET', message, 'state', 'queued', 'attempts', 0, 'requeues', 0, 'waits', 0,
           'updatedAt', now)
redis.call('ZREM', dead, member)
if task then redis.call('HSET', message, 'task', task) else redis.call('HDEL', message, 'task') end
redis.call('ZADD', inflight, now + queued_grace_ms, member)
redis.call('EXPIRE', message, ttl)
push_history(history, 'queued', now, detail, history_limit, ttl)
return remember(message, op, 'ok')
