-- Record the outcome of an attempt: ``new_state`` is delivered, retrying, failed or dead.
-- Only the lease's holder (``owner`` and its lease number ``lease``, both as granted) moves
-- the state, and a terminal state is never left, with one exception: a provider's accept is
-- a fact, so ``delivered`` learned by any attempt (even one whose lease was taken over)
-- becomes the state over ``failed`` or ``dead``, and takes the message off the dead
-- letters. Any other outcome of an attempt that no longer holds the lease only goes into
-- the history, the state unchanged.
-- A deferred retry (``deferred``: a provider's pause) gives the attempt back. A retry waits
-- in the schedule (``schedule``, scored by its due time; promote_due.lua publishes it then),
-- not in the in-flight index, and its record is kept ``ttl`` from its due time. It names
-- its task (``task``), the one its promotion publishes: the message's live task (lease.lua).
-- The provider's HTTP status of a failed attempt is counted as provider:<status>.
-- Returns ok, missing, stale (recorded in the history only) or terminal:<state>; a re-run
-- of the same call (``op``) after a lost reply answers what the first run did.
-- keys: message history dead stats inflight outbox schedule
-- args: op? task? owner lease# new_state ttl# history_limit# detail last_error? provider_id? delay_ms? dead_cap# member latency_bounds provider_status? deferred? announce?
-- include: lib outbox

local again = earlier_reply(message, op)
if again then return again end
local s = redis.call('HMGET', message, 'state', 'leaseOwner', 'lease')
if not s[1] then return 'missing' end
local now = now_ms()
if provider_status then redis.call('HINCRBY', stats, 'provider:' .. provider_status, 1) end
local holder = s[1] == 'processing' and s[2] == owner and tonumber(s[3] or '0') == lease
-- A late accept wins over what a lost lease left open or failed, not over an operator's
-- cancel or recall.
local late_accept = new_state == 'delivered' and
  (not TERMINAL[s[1]] or s[1] == 'failed' or s[1] == 'dead')
if not holder and not late_accept then
  local said = 'late answer of an attempt that lost its lease (' .. owner .. '): ' .. new_state
  if provider_id then said = said .. ' (providerMessageId ' .. provider_id .. ')' end
  if detail ~= '' then said = said .. ': ' .. detail end
  local left = redis.call('TTL', message)
  push_history(history, s[1], now, said, history_limit, left > 0 and left or ttl)
  if TERMINAL[s[1]] then return 'terminal:' .. s[1] end
  return 'stale'
end
if not holder then
  detail = 'accepted by the provider on an attempt that lost its lease (' .. owner .. '), after '
    .. s[1] .. (detail ~= '' and ('; ' .. detail) or '')
  if s[1] == 'dead' then redis.call('ZREM', dead, member) end
end
redis.call('HSET', message, 'state', new_state, 'updatedAt', now)
redis.call('HDEL', message, 'leaseOwner', 'leaseUntil')
if last_error then redis.call('HSET', message, 'lastError', last_error) end
redis.call('HINCRBY', stats, 'state:' .. new_state, 1)
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
local keep = ttl
if new_state == 'retrying' then
  local due = now + tonumber(delay_ms or '0')
  redis.call('HSET', message, 'dueAt', due)
  if task then redis.call('HSET', message, 'task', task) end
  redis.call('ZADD', schedule, due, member)
  keep = ttl + math.ceil((due - now) / 1000)
  if deferred then redis.call('HINCRBY', message, 'attempts', -1) end
else
  redis.call('ZREM', schedule, member)
end
redis.call('ZREM', inflight, member)
if new_state == 'dead' then
  redis.call('ZADD', dead, now, member)
  redis.call('ZREMRANGEBYRANK', dead, 0, -(dead_cap + 1))
end
if announce then outbox_add(outbox, message, member, 'message.' .. new_state, now, nil) end
redis.call('EXPIRE', message, keep)
push_history(history, new_state, now, detail, history_limit, keep)
return remember(message, op, 'ok')
