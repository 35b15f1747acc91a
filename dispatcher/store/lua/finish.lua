-- Record the outcome of an attempt: ``new_state`` is delivered, retrying, failed or dead.
-- A terminal state is never left; a retry is scheduled only by the lease's own owner.
-- The provider's HTTP status of a failed attempt is counted as provider:<status>.
-- Returns ok, missing, stale or terminal:<state>.
-- keys: message history dead stats inflight outbox
-- A deferred retry (``deferred``: a provider's pause) gives the attempt back.
-- args: owner new_state ttl# history_limit# detail last_error? provider_id? delay_ms? dead_cap# member latency_bounds retry_grace_ms# provider_status? deferred? announce?
-- include: lib outbox

local s = redis.call('HMGET', message, 'state', 'leaseOwner')
if not s[1] then return 'missing' end
if TERMINAL[s[1]] then return 'terminal:' .. s[1] end
if new_state == 'retrying' and s[2] ~= owner then return 'stale' end
local now = now_ms()
redis.call('HSET', message, 'state', new_state, 'updatedAt', now)
redis.call('HDEL', message, 'leaseOwner', 'leaseUntil')
if last_error then redis.call('HSET', message, 'lastError', last_error) end
redis.call('HINCRBY', stats, 'state:' .. new_state, 1)
if provider_status then redis.call('HINCRBY', stats, 'provider:' .. provider_status, 1) end
if new_state == 'delivered' then
  redis.call('HSET', message, 'deliveredAt', now)
  if provider_id then redis.call('HSET', message, 'providerMessageId', provider_id) end
  local created = tonumber(redis.call('HGET', message, 'createdAt') or now)
  local latency = now - created
  redis.call('HINCRBY', stats, 'latency:count', 1)
  redis.call('HINCRBY', stats, 'latency:sum_ms', latency)
  for bound in string.gmatch(latency_bounds, '[^,]+') do
    if latency <= tonumber(bound) then redis.call('HINCRBY', stats, 'latency:le:' .. bound, 1) end
  end
end
if new_state == 'retrying' then
  local due = now + tonumber(delay_ms or '0')
  redis.call('HSET', message, 'dueAt', due)
  redis.call('ZADD', inflight, due + retry_grace_ms, member)
  if deferred then redis.call('HINCRBY', message, 'attempts', -1) end
else
  redis.call('ZREM', inflight, member)
end
if new_state == 'dead' then
  redis.call('ZADD', dead, now, member)
  redis.call('ZREMRANGEBYRANK', dead, 0, -(dead_cap + 1))
end
if announce then outbox_add(outbox, message, member, 'message.' .. new_state, now, nil) end
redis.call('EXPIRE', message, ttl)
push_history(history, new_state, now, detail, history_limit, ttl)
return 'ok'
