-- Undo the claim of members the reaper could not publish: due again now, their wait count
-- back, so the next pass tries again and the doubling delay does not grow for nothing.
-- The message keys are spelled here from the members, as in claim_overdue.lua.
-- keys: inflight
-- args: key_open record_close history_close ttl# history_limit# detail members...
-- include: lib

local now = now_ms()
for _, member in ipairs(members) do
  local mkey = key_open .. member .. record_close
  local s = redis.call('HMGET', mkey, 'state', 'waits')
  if s[1] and not TERMINAL[s[1]] then
    redis.call('ZADD', inflight, now, member)
    if tonumber(s[2] or '0') > 0 then redis.call('HINCRBY', mkey, 'waits', -1) end
    push_history(key_open .. member .. history_close, s[1], now, detail, history_limit, ttl)
  end
end
return #members
