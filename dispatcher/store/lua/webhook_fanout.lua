-- Turn outbox events into their deliveries, one per subscribed endpoint, due now. Each
-- event leaves the outbox in the same call; one that another pump took first creates
-- nothing (so no endpoint gets an event twice). ``plan`` holds, per event: its exact
-- text, how many deliveries it has, its getMessageId and traceparent ('' for none),
-- then member and body of each; ``deliveries`` are their keys in the same order.
-- Returns the number of deliveries created.
-- keys: outbox due deliveries...
-- args: plan...
-- include: lib

local now = now_ms()
local i, d, made = 1, 0, 0
while i <= #plan do
  local taken = redis.call('LREM', outbox, 1, plan[i]) == 1
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
