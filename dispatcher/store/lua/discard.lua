-- Undo a create whose publish failed: only a record still untouched by any worker goes.
-- With ``pending`` its doorbell entry (``entry``) goes too, and the lane's flag (the ring
-- that failed to publish: the next entry rings anew).
-- Returns 1 when removed, else 0.
-- keys: message history inflight pending? flag?
-- args: fingerprint member entry?

local s = redis.call('HMGET', message, 'fp', 'state', 'attempts')
if s[1] == fingerprint and s[2] == 'queued' and s[3] == '0' then
  redis.call('DEL', message, history)
  redis.call('ZREM', inflight, member)
  if pending then
    redis.call('LREM', pending, 1, entry)
    redis.call('DEL', flag)
  end
  return 1
end
return 0
