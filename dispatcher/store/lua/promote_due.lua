-- Queue the schedule's members whose time has come: a scheduled send, or a retry whose
-- backoff ran out. For each (member, task id, task) triple still in the schedule and due
-- (Redis's clock), take it out of the schedule and, in the same step, record the task id
-- as the message's live task (lease.lua) and queue it: with ``pending`` (the doorbell,
-- doorbell.lua) as an entry "<shard open><member> <task id>" of that pending list
-- (``key_open`` is the shard's opening: keys.pending_entry), ringing the lane once
-- (``ring_task`` pushed onto ``queue``, else the reply asks the caller to publish the
-- ring); without, push its task (when the broker is this Redis; else the caller
-- publishes the members returned, under their task ids). A ``scheduled`` message becomes
-- ``queued`` with the in-flight deadline of a fresh submit; a ``retrying`` one stays
-- ``retrying`` (its due time has come, lease.lua serves it) with the in-flight deadline
-- of a retry: now plus ``retry_grace_ms``. The take is the claim: of several workers
-- promoting at once, one removes the member and the others skip it, so no message is
-- queued twice. A retry is published under the id its record names (finish.lua recorded
-- it): a member whose record names another task than the one given (a newer retry since
-- the caller read it, due.lua) stays for the next look. A member whose record is gone or
-- no longer waiting (cancelled, or delivered by a late accept) only leaves the schedule.
-- The message keys are spelled from the members (key_open .. member .. record_close):
-- this script is not single-slot (docs/architecture.md, "Scripts").
-- Returns {the members promoted, 1 when the caller publishes a ring else 0}.
-- keys: schedule inflight stats queue? pending? flag?
-- args: ring_task? ring_ms# ttl# history_limit# queued_grace_ms# retry_grace_ms# key_open record_close history_close batch...
-- include: lib doorbell

local now = now_ms()
local promoted = {}
local ring = 0
for i = 1, #batch, 3 do
  local member, task_id, task = batch[i], batch[i + 1], batch[i + 2]
  local due = redis.call('ZSCORE', schedule, member)
  if due and tonumber(due) <= now then
    local mkey = key_open .. member .. record_close
    local s = redis.call('HMGET', mkey, 'state', 'createdAt', 'task')
    local waiting = s[1] == 'scheduled' or s[1] == 'retrying'
    if not (waiting and s[3] and s[3] ~= task_id) then
      redis.call('ZREM', schedule, member)
      if waiting then
        if pending then
          if ring_push(pending, flag, queue, ring_task, key_open .. member .. ' ' .. task_id,
                       ring_ms) then
            ring = 1
          end
        elseif queue then
          redis.call('LPUSH', queue, task)
        end
        redis.call('HSET', mkey, 'task', task_id)
        table.insert(promoted, member)
      end
      if s[1] == 'scheduled' then
        local hkey = key_open .. member .. history_close
        redis.call('HSET', mkey, 'state', 'queued', 'updatedAt', now)
        redis.call('EXPIRE', mkey, ttl)
        redis.call('ZADD', inflight, now + queued_grace_ms, member)
        redis.call('HINCRBY', stats, 'promoted', 1)
        scheduled_history(hkey, s[2], due, history_limit, ttl)
        push_history(hkey, 'queued', now,
          'scheduled time reached (' .. (now - tonumber(due)) .. ' ms after it)', history_limit, ttl)
      elseif s[1] == 'retrying' then
        redis.call('ZADD', inflight, now + retry_grace_ms, member)
      end
    end
  end
end
return {promoted, ring}
