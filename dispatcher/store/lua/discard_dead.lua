-- An operator gives up on a dead message: it leaves the dead-letter index; its record stays
-- (state ``dead``, with the discard in its history) until it expires.
-- Returns ok, missing, not_listed (discarded already) or state:<state> (not dead).
-- keys: message history dead
-- args: member detail ttl# history_limit#
-- include: lib

local refused = not_dead(message, dead, member)
if refused then return refused end
if redis.call('ZREM', dead, member) == 0 then return 'not_listed' end
local now = now_ms()
redis.call('HSET', message, 'updatedAt', now)
push_history(history, 'dead', now, detail, history_limit, ttl)
return 'ok'
