-- Drain up to ``limit`` entries of a lane's pending list (oldest first) and lease each one
-- for its attempt, as lease.lua does one (the entry's task id, if any, is the task asking):
-- a drained message is leased or stood down in the same step, never fetched but unleased.
-- Then the doorbell: when the list is now empty the lane's flag goes (the next entry rings
-- anew); else a ring stays outstanding for the rest: pushed onto ``queue`` when
-- ``ring_task`` is given, else the caller publishes it. An entry names its message's shard
-- ("<shard open><member>[ <task id>]", keys.pending_entry): the message's keys and that
-- shard's in-flight index are spelled from it (open .. member .. record_close, open ..
-- inflight_name), so one drain serves a lane whose messages are in every shard; this
-- script is not single-slot (docs/architecture.md, "Scripts"). With ``limit`` 0 it only
-- passes the ring on.
-- Returns {ring: none, pushed or publish, {member, owner, lease reply}...}.
-- keys: pending flag queue rates...
-- args: ring_task? ring_ms# limit# lease_ms# check_ms# ttl# history_limit# record_close history_close inflight_name channel? app? unrecorded? types prepay_csv owners...
-- include: lib lease_one

local prepay = {}
for number in string.gmatch(prepay_csv, '[^,]+') do table.insert(prepay, number) end
local drained = {}
local entries = limit > 0 and redis.call('RPOP', pending, limit)
if entries then
  for i, entry in ipairs(entries) do
    local named, task = entry, nil
    local space = string.find(entry, ' ', 1, true)
    if space then
      named, task = string.sub(entry, 1, space - 1), string.sub(entry, space + 1)
    end
    local _, close = string.find(named, '}:', 1, true)
    local open, member = string.sub(named, 1, close), string.sub(named, close + 1)
    local reply = lease_one(open .. member .. record_close, open .. member .. history_close,
      open .. inflight_name, rates, task, owners[i], lease_ms, check_ms, ttl, history_limit,
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
