-- The webhook pump's lease: one pump of the fleet works at a time (docs/webhooks.md,
-- "Cost"). ``owner`` holding it renews it for ``ttl_ms``; a free lease is taken (a
-- stopping owner gives it up with ``delete_if_equal.lua``). Returns 1 when ``owner``
-- holds it now, else 0.
-- keys: lease
-- args: owner ttl_ms#

local holder = redis.call('GET', lease)
if holder == owner then
  redis.call('PEXPIRE', lease, ttl_ms)
  return 1
end
if holder then return 0 end
redis.call('SET', lease, owner, 'PX', ttl_ms)
return 1
