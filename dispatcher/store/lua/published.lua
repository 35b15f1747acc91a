-- The broker confirmed the task of messages recorded while their publish was pending
-- (create.lua with the publish grace as their deadline): each still ``queued`` gets the
-- queued grace as its deadline, so recovery now leaves it to its task. One that moved on
-- (leased already) or whose deadline lies further ahead is left as it is.
-- Returns how many deadlines moved.
-- keys: message inflight
-- args: member queued_grace_ms#
-- include: lib

if redis.call('HGET', message, 'state') ~= 'queued' then return 0 end
local due = redis.call('ZSCORE', inflight, member)
local at = now_ms() + queued_grace_ms
if not due or tonumber(due) >= at then return 0 end
redis.call('ZADD', inflight, at, member)
return 1
