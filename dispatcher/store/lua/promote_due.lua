-- Queue scheduled messages whose time has come: for each (member, task) pair still in the
-- schedule and due (Redis's clock), take it out of the schedule and, in the same step,
-- record ``queued`` with the in-flight deadline of a fresh submit and push its task (when
-- the broker is this Redis; else the caller publishes the members returned). The take is
-- the claim: of several workers promoting at once, one removes the member and the others
-- skip it, so no message is queued twice. A member whose record is gone or no longer
-- ``scheduled`` (cancelled) only leaves the schedule. The promotion is generic ("a due
-- reference becomes a queued task"): another waiting state may join ``scheduled`` here.
-- The message keys are spelled from the members (key_open .. member .. record_close):
-- this script is not single-slot (docs/architecture.md, "Scripts").
-- Returns the members promoted.
-- keys: schedule inflight stats queue?
-- args: ttl# history_limit# queued_grace_ms# key_open record_close history_close batch...
-- include: lib

local now = now_ms()
local promoted = {}
for i = 1, #batch, 2 do
  local member, task = batch[i], batch[i + 1]
  local due = redis.call('ZSCORE', schedule, member)
  if due and tonumber(due) <= now then
    redis.call('ZREM', schedule, member)
    local mkey = key_open .. member .. record_close
    local s = redis.call('HMGET', mkey, 'state', 'createdAt')
    if s[1] == 'scheduled' then
      local hkey = key_open .. member .. history_close
      if queue then redis.call('LPUSH', queue, task) end
      redis.call('HSET', mkey, 'state', 'queued', 'updatedAt', now)
      redis.call('EXPIRE', mkey, ttl)
      redis.call('ZADD', inflight, now + queued_grace_ms, member)
      redis.call('HINCRBY', stats, 'promoted', 1)
      scheduled_history(hkey, s[2], due, history_limit, ttl)
      push_history(hkey, 'queued', now,
        'scheduled time reached (' .. (now - tonumber(due)) .. ' ms after it)', history_limit, ttl)
      table.insert(promoted, member)
    end
  end
end
return promoted
