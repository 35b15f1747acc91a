-- Cancel a message not sent yet: ``scheduled``, ``queued`` or ``retrying`` becomes the
-- terminal ``cancelled`` (out of the schedule and the in-flight index). A ``processing``
-- message is left alone: its attempt holds the lease and finishes. Atomic against
-- lease.lua: whichever runs first wins, and a lease never starts on a cancelled message
-- (its task may still be in the broker: it stands down).
-- Returns cancelled:<state before>, processing, terminal:<state> or missing.
-- keys: message history inflight schedule stats outbox
-- args: member ttl# history_limit# detail announced
-- include: lib outbox

local s = redis.call('HMGET', message, 'state', 'createdAt', 'scheduledFor')
local state = s[1]
if not state then return 'missing' end
if TERMINAL[state] then return 'terminal:' .. state end
if state == 'processing' then return 'processing' end
local now = now_ms()
redis.call('HSET', message, 'state', 'cancelled', 'updatedAt', now)
redis.call('HDEL', message, 'dueAt')
redis.call('ZREM', schedule, member)
redis.call('ZREM', inflight, member)
redis.call('HINCRBY', stats, 'state:cancelled', 1)
redis.call('EXPIRE', message, ttl)
if state == 'scheduled' then scheduled_history(history, s[2], s[3], history_limit, ttl) end
push_history(history, 'cancelled', now, detail, history_limit, ttl)
outbox_add(outbox, message, member, 'message.cancelled', now, announced)
return 'cancelled:' .. state
