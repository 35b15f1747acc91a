-- Send a dead webhook delivery again, its attempts restored (the same webhook id and body,
-- so a receiver that did get it dedupes it). Returns ok, not_dead or missing.
-- keys: delivery due dead
-- args: member
-- include: lib

if redis.call('ZREM', dead, member) == 0 then return 'not_dead' end
if redis.call('EXISTS', delivery) == 0 then return 'missing' end
local now = now_ms()
redis.call('PERSIST', delivery)
redis.call('HSET', delivery, 'attempts', 0, 'dueAt', now)
redis.call('HDEL', delivery, 'diedAt')
redis.call('ZADD', due, now, member)
return 'ok'
