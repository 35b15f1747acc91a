-- Claim the members whose lease, retry or queue wait ran out; the caller re-publishes
-- them. Each claimed deadline moves ahead, so concurrent reapers never publish one twice.
-- A lease lost more than ``max_requeues`` times is dead-lettered (poison). The message
-- keys are spelled here from the members (key_open .. member .. record_close): this
-- script is not single-slot (docs/architecture.md, "Scripts").
-- keys: inflight dead stats outbox queue?
-- args: limit# requeue_delay_ms# max_requeues# ttl# history_limit# key_open record_close history_close dead_cap# dead_announced
-- include: lib outbox

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)
local claimed = {}
-- A queued message is behind a backlog while the broker queue still holds work: leave it.
local backlog = queue and redis.call('LLEN', queue) > 0
for _, member in ipairs(due) do
  local mkey = key_open .. member .. record_close
  local hkey = key_open .. member .. history_close
  local s = redis.call('HMGET', mkey, 'state', 'requeues', 'waits')
  if not s[1] or TERMINAL[s[1]] then
    redis.call('ZREM', inflight, member)
  elseif s[1] == 'queued' and backlog then
    redis.call('ZADD', inflight, now + requeue_delay_ms, member)
  elseif s[1] ~= 'processing' then
    -- Queued or retrying past its deadline: its queue entry may be lost, or only behind a
    -- backlog. Publish again (a duplicate stands down) with a doubling delay, so a long
    -- backlog is not flooded; no worker was lost, so it never counts toward poison.
    local waits = tonumber(s[3] or '0') + 1
    redis.call('HSET', mkey, 'waits', waits)
    redis.call('ZADD', inflight, now + requeue_delay_ms * 2 ^ math.min(waits - 1, 8), member)
    redis.call('HINCRBY', stats, 'recovered', 1)
    push_history(hkey, s[1], now, 'recovery: re-enqueued (' .. s[1] ..
      ' past its deadline; its queue entry may be lost or behind a backlog)', history_limit, ttl)
    table.insert(claimed, member)
  else
    local requeues = tonumber(s[2] or '0') + 1
    if requeues > max_requeues then
      local err = cjson.encode({code = 'worker_lost', retryable = true,
        message = 'recovered ' .. (requeues - 1) .. ' times without finishing (poison message?)'})
      redis.call('HSET', mkey, 'state', 'dead', 'updatedAt', now, 'lastError', err)
      redis.call('HDEL', mkey, 'leaseOwner', 'leaseUntil', 'dueAt')
      redis.call('ZREM', inflight, member)
      redis.call('ZADD', dead, now, member)
      redis.call('ZREMRANGEBYRANK', dead, 0, -(dead_cap + 1))
      redis.call('HINCRBY', stats, 'state:dead', 1)
      redis.call('EXPIRE', mkey, ttl)
      outbox_add(outbox, mkey, member, 'message.dead', now, dead_announced)
      push_history(hkey, 'dead', now, 'recovered ' .. (requeues - 1) ..
        ' times without finishing: dead-lettered', history_limit, ttl)
    else
      redis.call('HSET', mkey, 'requeues', requeues)
      redis.call('ZADD', inflight, now + requeue_delay_ms, member)
      redis.call('HINCRBY', stats, 'recovered', 1)
      push_history(hkey, s[1], now, 'recovery: re-enqueued (' .. s[1] ..
        ' past its deadline; requeue ' .. requeues .. ')', history_limit, ttl)
      table.insert(claimed, member)
    end
  end
end
return claimed
