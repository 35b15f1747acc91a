-- Claim the members whose lease, retry or queue wait ran out; the caller re-publishes
-- them (and un-claims, unclaim.lua, what it could not publish). Each claimed deadline moves
-- ahead, so concurrent reapers never publish one twice. Looks at up to ``scan`` overdue
-- members; every one it looks at gets a new deadline or leaves the index, so the caller
-- calls again while a scan was full and a backlog of one kind cannot hide another.
-- A queued member is left alone while it is behind the head of the broker's queue
-- (``backlog_since_ms``: when the head's message was queued; 0 when unknown; nil when the
-- queue is empty or not known): its task is still ahead. One ahead of the head has lost its
-- task (or a busy worker holds it) and is published again. A ``processing`` member whose
-- lease still runs is due for a look every ``worker_timeout_ms`` (lease.lua): while its
-- holder's process beats (``beats``, dispatcher/store/liveness.py), or never beat, it gets
-- its next look; once its last beat is older than the timeout the holder is dead, its lease
-- is broken and it is claimed like an expired lease. Only a caller that has itself beaten
-- without a gap since ``watching_since_ms``, half a timeout ago or more (two beats of
-- every live process), may judge a holder dead (nil: it may not). An expired lease counts toward
-- poison once per attempt that lost it (its lease number), however often it is re-published;
-- a lease lost more than ``max_requeues`` times is dead-lettered. A member without a record
-- (expired before the message ended) is counted and traced like a rejected queue message
-- (stats ``rejected:expired``, an entry in the rejected list).
-- No deadline lies further ahead than half the record's TTL, and every member looked at
-- gets its TTL renewed: a record never expires while its message is not terminal.
-- The message keys are spelled here from the members (key_open .. member .. record_close):
-- this script is not single-slot (docs/architecture.md, "Scripts").
-- Each claimed member gets the id of the task to publish (its live task, lease.lua).
-- Returns {claimed members, number looked at, their task ids, the claimed members that lost
-- a lease (an attempt was running: their task goes to the head of the queue)}.
-- keys: inflight dead stats rejected outbox beats
-- args: scan# requeue_delay_ms# max_requeues# ttl# history_limit# key_open record_close history_close dead_cap# rejected_cap# dead_announced worker_timeout_ms# backlog_since_ms? watching_since_ms?
-- include: lib outbox

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, scan)
local claimed = {}
local task_ids = {}
local lost_leases = {}
local furthest = math.floor(ttl * 1000 / 2)
local function deadline(delay_ms) return now + math.min(delay_ms, furthest) end
local since = tonumber(backlog_since_ms)
local watching = tonumber(watching_since_ms)
local may_judge = watching ~= nil and now - watching >= worker_timeout_ms / 2
-- The last beat (ms) of the lease holder's process; nil for a process that never beat (not
-- judged: its lease runs to its end).
local function holder_beat(owner)
  if not owner then return nil end
  local process = string.match(owner, '^(.*):%d+$')
  if not process then return nil end
  local beat = redis.call('ZSCORE', beats, process)
  return beat and tonumber(beat) or nil
end
local function claim(mkey, member)
  local n = redis.call('HINCRBY', mkey, 'recoveries', 1)
  local task = 'recovery:' .. member .. ':' .. n
  redis.call('HSET', mkey, 'task', task)
  table.insert(claimed, member)
  table.insert(task_ids, task)
end
for _, member in ipairs(due) do
  local mkey = key_open .. member .. record_close
  local hkey = key_open .. member .. history_close
  local s = redis.call('HMGET', mkey, 'state', 'requeues', 'waits', 'lease', 'claimedLease',
                       'updatedAt', 'leaseUntil', 'leaseOwner')
  local leased = s[1] == 'processing' and tonumber(s[7] or '0') > now
  local beat = leased and holder_beat(s[8]) or nil
  local broken = beat ~= nil and may_judge and beat < now - worker_timeout_ms
  if not s[1] then
    redis.call('ZREM', inflight, member)
    redis.call('HINCRBY', stats, 'rejected:expired', 1)
    redis.call('LPUSH', rejected, cjson.encode({reason = 'expired', at = now, excerpt = '',
      detail = member .. ': the status record expired before the message ended'}))
    redis.call('LTRIM', rejected, 0, rejected_cap - 1)
  elseif TERMINAL[s[1]] then
    redis.call('ZREM', inflight, member)
  else
    redis.call('EXPIRE', mkey, ttl)
    redis.call('EXPIRE', hkey, ttl)
    local queued_at = tonumber(s[6] or '0')
    if s[1] == 'queued' and since and queued_at >= since then
      -- Behind the head: look again when the head could have reached it.
      local behind = since > 0 and queued_at - since or 0
      redis.call('ZADD', inflight, deadline(math.max(requeue_delay_ms, behind)), member)
    elseif leased and not broken then
      -- A running lease whose holder still beats (or never beat): look again at its end or
      -- when the holder would be dead if it beat no more (at most a timeout from now).
      local look = now + worker_timeout_ms
      if beat then look = math.min(look, math.max(beat + worker_timeout_ms + 1, now + 1000)) end
      redis.call('ZADD', inflight, math.min(tonumber(s[7]), look), member)
    elseif s[1] ~= 'processing' then
      -- Queued ahead of the head (or with no queue to compare), or a due retry promoted from
      -- the schedule more than its grace ago: its task may be lost. Publish again (a
      -- duplicate stands down) with a doubling delay, reset by the next lease; no attempt
      -- ran, so never poison.
      local waits = tonumber(s[3] or '0') + 1
      redis.call('HSET', mkey, 'waits', waits)
      if s[1] == 'queued' then redis.call('HSET', mkey, 'updatedAt', now) end
      redis.call('ZADD', inflight, deadline(requeue_delay_ms * 2 ^ math.min(waits - 1, 8)), member)
      redis.call('HINCRBY', stats, 'recovered', 1)
      push_history(hkey, s[1], now, 'recovery: re-enqueued (' .. s[1] ..
        ' past its deadline; its queue entry may be lost)', history_limit, ttl)
      claim(mkey, member)
    else
      local requeues = tonumber(s[2] or '0')
      if s[4] ~= s[5] then requeues = requeues + 1 end
      if requeues > max_requeues then
        local err = cjson.encode({code = 'worker_lost', retryable = true,
          message = 'lost the lease ' .. requeues .. ' times without finishing (poison message?)'})
        redis.call('HSET', mkey, 'state', 'dead', 'updatedAt', now, 'lastError', err)
        redis.call('HDEL', mkey, 'leaseOwner', 'leaseUntil', 'dueAt')
        redis.call('ZREM', inflight, member)
        redis.call('ZADD', dead, now, member)
        redis.call('ZREMRANGEBYRANK', dead, 0, -(dead_cap + 1))
        redis.call('HINCRBY', stats, 'state:dead', 1)
        outbox_add(outbox, mkey, member, 'message.dead', now, dead_announced)
        push_history(hkey, 'dead', now, 'lost the lease ' .. requeues ..
          ' times without finishing: dead-lettered', history_limit, ttl)
      else
        local why = ' past its deadline'
        if broken then
          -- The next attempt takes the lease over at once (lease.lua).
          redis.call('HSET', mkey, 'leaseUntil', now)
          why = ': its worker ' .. string.match(s[8], '^(.*):%d+$') .. ' stopped beating'
        end
        redis.call('HSET', mkey, 'requeues', requeues, 'claimedLease', s[4] or '0')
        redis.call('ZADD', inflight, deadline(requeue_delay_ms), member)
        redis.call('HINCRBY', stats, 'recovered', 1)
        push_history(hkey, s[1], now, 'recovery: re-enqueued (' .. s[1] ..
          why .. '; lost lease ' .. requeues .. ')', history_limit, ttl)
        claim(mkey, member)
        table.insert(lost_leases, member)
      end
    end
  end
end
return {claimed, #due, task_ids, lost_leases}
