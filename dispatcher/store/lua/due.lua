-- The schedule's members due now (Redis's clock), at most ``limit``, each with the task its
-- record names ('' when none: a scheduled send's; a retry's is the one finish.lua recorded),
-- and the milliseconds until the next later one ('' when none):
-- {wait, member, task, member, task, ...}. Reads only.
-- The message keys are spelled from the members (key_open .. member .. record_close).
-- keys: schedule
-- args: limit# key_open record_close
-- include: lib

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', schedule, '-inf', now, 'LIMIT', 0, limit)
local wait = ''
if #due < limit then
  local next = redis.call('ZRANGEBYSCORE', schedule, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if next[2] then wait = tostring(tonumber(next[2]) - now) end
end
local reply = {wait}
for _, member in ipairs(due) do
  table.insert(reply, member)
  table.insert(reply, redis.call('HGET', key_open .. member .. record_close, 'task') or '')
end
return reply
