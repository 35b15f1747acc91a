-- Turn outbox events into their deliveries, one per subscribed endpoint, due now. An event
-- is fanned out once: the first call marks it taken (``taken_open`` .. its webhook id, kept
-- ``taken_ttl_ms``) and a later call for the same event (another pump's, or one after the
-- event's removal from its shard's outbox failed) creates nothing, so no endpoint gets an
-- event twice. The caller removes the events from their outbox after this call (the outbox
-- is in the message's shard, another slot on a Redis Cluster: docs/webhooks.md, "No event
-- lost"). ``plan`` holds, per event: its webhook id, how many deliveries it has, its
-- getMessageId and traceparent ('' for none), then member and body of each;
-- ``deliveries`` are their keys in the same order. Returns the number of deliveries
-- created.
-- keys: due deliveries...
-- args: taken_open taken_ttl_ms# plan...
-- include: lib

local now = now_ms()
local i, d, made = 1, 0, 0
while i <= #plan do
  local taken = redis.call('SET', taken_open .. plan[i], '1', 'NX', 'PX', taken_ttl_ms)
  local count = tonumber(plan[i + 1])
  local message, traceparent = plan[i + 2], plan[i + 3]
  i = i + 4
  for _ = 1, count do
    d = d + 1
    if taken then
      redis.call('HSET', deliveries[d], 'body', plan[i + 1], 'attempts', 0, 'createdAt', now,
                 'claim', 0, 'message', message)
      if traceparent ~= '' then
        redis.call('HSET', deliveries[d], 'traceparent', traceparent)
      end
      redis.call('ZADD', due, now, plan[i])
      made = made + 1
    end
    i = i + 2
  end
end
return made
