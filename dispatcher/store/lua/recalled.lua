-- Record that a delivered message was recalled from its recipients: ``delivered`` becomes
-- the terminal ``recalled``. Returns ok, missing or the state it is in instead.
-- keys: message history stats outbox
-- args: member ttl# history_limit# detail announced
-- include: lib outbox

local state = redis.call('HGET', message, 'state')
if not state then return 'missing' end
if state ~= 'delivered' then return state end
local now = now_ms()
redis.call('HSET', message, 'state', 'recalled', 'updatedAt', now, 'recalledAt', now)
redis.call('HINCRBY', stats, 'state:recalled', 1)
redis.call('EXPIRE', message, ttl)
push_history(history, 'recalled', now, detail, history_limit, ttl)
outbox_add(outbox, message, member, 'message.recalled', now, announced)
return 'ok'
