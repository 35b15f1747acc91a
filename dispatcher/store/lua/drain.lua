-- Drain up to ``limit`` entries of a lane's pending list (oldest first) and lease each one
-- for its attempt, as lease.lua does one (the entry's task id, if any, is the task asking):
-- a drained message is leased or stood down in the same step, never fetched but unleased.
-- Then the doorbell: when the list is now empty the lane's flag goes (the next entry rings
-- anew); else a ring stays outstanding for the rest: pushed onto ``queue`` when
-- ``ring_task`` is given, else the caller publishes it. The message keys are spelled from
-- the members (key_open .. member .. record_close): this script is not single-slot
-- (docs/architecture.md, "Scripts"). With ``limit`` 0 it only passes the ring on.
-- Returns {ring: none, pushed or publish, {member, owner, lease reply}...}.
-- keys: pending flag queue inflight rates...
-- args: ring_task? ring_ms# limit# lease_ms# check_ms# ttl# history_limit# key_open record_close history_close channel? app? unrecorded? types prepay_csv owners...
-- include: lib lease_one

local prepay = {}
for number in string.gmatch(prepay_csv, '[^,]+') do table.insert(prepay, number) end
local drained = {}
local entries = limit > 0 and redis.call('RPOP', pending, limit)
if entries then
  for i, entry in ipairs(entries) do
    local member, task = entry, nil
    local space = string.find(entry, ' ', 1, true)
    if space then
      member, task = string.sub(entry, 1, space - 1), string.sub(entry, space + 1)
    end
    local reply = lease_one(key_open .. member .. record_close, key_open .. member ..
      history_close, inflight, rates, task, owners[i], lease_ms, check_ms, ttl, history_limit,
      member, channel, app, unrecorded, types, prepay)
    table.insert(drained, {member, owners[i], reply})
  end
end
local ring = 'none'
if redis.call('LLEN', pending) == 0 then
  redis.call('DEL', flag)
else
  redis.call('SET', flag, '1', 'PX', ring_ms)
  if ring_task then
    redis.call('LPUSH', queue, ring_task)
    ring = 'pushed'
  else
    ring = 'publish'
  end
end
return {ring, drained}
