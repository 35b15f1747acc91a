-- The schedule's members due now (Redis's clock), at most ``limit``, and the milliseconds
-- until the next later one ('' when none): {wait, member, member, ...}. Reads only.
-- keys: schedule
-- args: limit#
-- include: lib

local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', schedule, '-inf', now, 'LIMIT', 0, limit)
local wait = ''
if #due < limit then
  local next = redis.call('ZRANGEBYSCORE', schedule, '(' .. now, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if next[2] then wait = tostring(tonumber(next[2]) - now) end
end
table.insert(due, 1, wait)
return due
