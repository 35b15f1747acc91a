-- Claim the deliveries due now for one attempt each: each moves ahead by ``lease_ms`` (so
-- a worker that dies mid-send leaves it to be claimed again then) and its claim number
-- grows (so the outcome of an older claim is refused). Returns member, claim, member, ...
-- The delivery keys are spelled from the members (key_open .. member).
-- keys: due
-- args: limit# lease_ms# key_open
-- include: lib

local now = now_ms()
local claimed = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', now, 'LIMIT', 0, limit)) do
  local key = key_open .. member
  if redis.call('EXISTS', key) == 0 then
    redis.call('ZREM', due, member)
  else
    local claim = redis.call('HINCRBY', key, 'claim', 1)
    redis.call('ZADD', due, now + lease_ms, member)
    table.insert(claimed, member)
    table.insert(claimed, tostring(claim))
  end
end
return claimed
