-- Add a line to a message's history without changing its state: a provider's later word on
-- a delivered message (WeChat's template receipt). The history keeps the record's expiry.
-- Returns the message's state, or 'missing'.
-- keys: message history
-- args: detail ttl# history_limit#
-- include: lib

local state = redis.call('HGET', message, 'state')
if not state then return 'missing' end
local left = redis.call('TTL', message)
if left > 0 then ttl = left end
push_history(history, state, now_ms(), detail, history_limit, ttl)
return state
