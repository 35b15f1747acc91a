-- Record the outcomes of a batch of webhook attempts to one endpoint, in one call. Per
-- delivery, ``outcomes`` holds 8 values: member, claim, outcome (delivered, retrying,
-- dead; ``released``: not attempted, due again now, e.g. the rest of a batch out of
-- time), attempted (0 when no request was sent: the endpoint is disabled or gone),
-- status, last_error, next_ms, disable (the endpoint is disabled for that reason); an
-- empty string stands for none. An outcome is refused when a newer claim of its delivery
-- exists (``stale``). Returns, per delivery in order, ok, stale or missing.
-- keys: due dead endpoint deliveries...
-- args: dead_cap# dead_ttl# key_open outcomes...
-- include: lib

local function none_if_empty(value)
  if value == '' then return nil end
  return value
end

local function record(delivery, member, claim, outcome, attempted, status, last_error, next_ms,
                      disable, now)
  local current = redis.call('HGET', delivery, 'claim')
  if not current then
    redis.call('ZREM', due, member)
    return 'missing'
  end
  if tonumber(current) ~= claim then return 'stale' end
  if outcome == 'released' then
    redis.call('ZADD', due, now, member)
    return 'ok'
  end
  if attempted == 1 then
    redis.call('HINCRBY', endpoint, 'attempts', 1)
    redis.call('HINCRBY', delivery, 'attempts', 1)
    redis.call('HSET', delivery, 'lastAttemptAt', now)
    if status then redis.call('HSET', endpoint, 'lastStatus', status) end
  end
  if outcome == 'delivered' then
    redis.call('DEL', delivery)
    redis.call('ZREM', due, member)
    redis.call('HINCRBY', endpoint, 'successes', 1)
    redis.call('HSET', endpoint, 'lastSuccessAt', now)
    redis.call('HDEL', endpoint, 'failingSince')
    return 'ok'
  end
  if status then redis.call('HSET', delivery, 'lastStatus', status) end
  redis.call('HSET', delivery, 'lastError', last_error or '')
  if attempted == 1 then
    redis.call('HINCRBY', endpoint, 'failures', 1)
    redis.call('HSET', endpoint, 'lastError', last_error or '', 'lastFailureAt', now)
    redis.call('HSETNX', endpoint, 'failingSince', now)
  end
  if disable then redis.call('HSET', endpoint, 'disabled', disable, 'disabledAt', now) end
  if outcome == 'retrying' then
    redis.call('HSET', delivery, 'dueAt', now + next_ms)
    redis.call('ZADD', due, now + next_ms, member)
    return 'ok'
  end
  redis.call('ZREM', due, member)
  redis.call('HSET', delivery, 'diedAt', now)
  redis.call('ZADD', dead, now, member)
  redis.call('EXPIRE', delivery, dead_ttl)
  return 'ok'
end

local now = now_ms()
local verdicts = {}
for d = 1, #deliveries do
  local o = (d - 1) * 8
  table.insert(verdicts, record(deliveries[d], outcomes[o + 1], tonumber(outcomes[o + 2]),
    outcomes[o + 3], tonumber(outcomes[o + 4]), none_if_empty(outcomes[o + 5]),
    none_if_empty(outcomes[o + 6]), tonumber(outcomes[o + 7]), none_if_empty(outcomes[o + 8]),
    now))
end
local over = redis.call('ZCARD', dead) - dead_cap
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', dead, 0, over - 1)) do
    redis.call('DEL', key_open .. old)
  end
  redis.call('ZREMRANGEBYRANK', dead, 0, over - 1)
end
return verdicts
