-- Delete a key only while it still holds ``expected`` (a token or a lock that may have been
-- replaced by another worker meanwhile). Returns 1 when deleted.
-- keys: target
-- args: expected

if redis.call('GET', target) == expected then return redis.call('DEL', target) end
return 0
