-- Turn one outbox event into its deliveries, one per subscribed endpoint, due now. The
-- event leaves the outbox in the same call; when another pump took it first, nothing is
-- created (so no endpoint gets the event twice). ``entries`` holds, per delivery key,
-- its member and body. Returns the number of deliveries created, or -1.
-- keys: outbox due deliveries...
-- args: event entries...
-- include: lib

if redis.call('LREM', outbox, 1, event) == 0 then return -1 end
local now = now_ms()
for i, key in ipairs(deliveries) do
  local member, body = entries[2 * i - 1], entries[2 * i]
  redis.call('HSET', key, 'body', body, 'attempts', 0, 'createdAt', now, 'claim', 0)
  redis.call('ZADD', due, now, member)
end
return #deliveries
