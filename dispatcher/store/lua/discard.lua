-- Undo a create whose publish failed: only a record still untouched by any worker goes.
-- Returns 1 when removed, else 0.
-- keys: message history inflight
-- args: fingerprint member

local s = redis.call('HMGET', message, 'fp', 'state', 'attempts')
if s[1] == fingerprint and s[2] == 'queued' and s[3] == '0' then
  redis.call('DEL', message, history)
  redis.call('ZREM', inflight, member)
  return 1
end
return 0
