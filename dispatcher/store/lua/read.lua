-- A read receipt: set ``readAt`` once (a repeated receipt changes nothing), note it in the
-- history and, when the message's client is one of ``readers`` (",a,b,"), record
-- ``message.read`` (lua/outbox.lua). The history keeps the record's expiry.
-- Returns ok, already or missing.
-- keys: message history outbox
-- args: member detail read_at# ttl# history_limit# readers
-- include: lib outbox

local state = redis.call('HGET', message, 'state')
if not state then return 'missing' end
if redis.call('HSETNX', message, 'readAt', read_at) == 0 then return 'already' end
local left = redis.call('TTL', message)
if left > 0 then ttl = left end
local now = now_ms()
push_history(history, state, now, detail, history_limit, ttl)
outbox_add(outbox, message, member, 'message.read', now, readers)
return 'ok'
