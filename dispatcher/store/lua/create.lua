-- Record a submit as ``queued``; with ``pending`` (the doorbell, doorbell.lua) put ``entry``
-- (keys.pending_entry) on that pending list and ring its lane unless a ring is outstanding
-- (``task`` is then the ring's task message, pushed onto the queue list when the broker is
-- this Redis; without one the caller publishes a ring after every create); without
-- ``pending``, with ``task`` push its delivery task onto the queue list (both or neither). With a gate, the submit first passes
-- its sign's replay guard and its client's rate (dispatcher/gate.py); a refusal keeps
-- nothing. With ``schedule`` and a ``send_at_ms`` more than ``immediate_ms`` ahead the
-- message is recorded ``scheduled`` in that sorted set instead (no task: promote_due.lua
-- queues it at its time), and its record is kept ``ttl`` from that time; its history
-- starts when it leaves ``scheduled``. A re-run of the same call (``op``) after a lost
-- reply answers what the first run did, before the gate (whose guard the first run set)
-- can call it a replay. On a Redis Cluster the gate's keys are in another slot: the gate
-- runs first on its own (gate.lua) and this script gets none.
-- Returns created, scheduled, duplicate, conflict, replayed or wait:<ms>.
-- keys: message history inflight stats queue? rate? guard? schedule? pending? flag?
-- args: op? fingerprint ttl# history_limit# queued_grace_ms# member entry? task? gate_interval_ms# gate_tolerance_ms# guard_ttl_ms# send_at_ms# immediate_ms# ring_ms# fields...
-- include: lib doorbell

local again = earlier_reply(message, op)
if again then return again end
local refused = pass_gate(rate, guard, '1', gate_interval_ms, gate_tolerance_ms, guard_ttl_ms)
if refused then return refused end
local fp = redis.call('HGET', message, 'fp')
if fp then
  if fp == fingerprint then return 'duplicate' end
  return 'conflict'
end
local now = now_ms()
if schedule and send_at_ms > now + immediate_ms then
  local keep = ttl + math.ceil((send_at_ms - now) / 1000)
  redis.call('ZADD', schedule, send_at_ms, member)
  -- No history list while it waits (a key less per waiting message): the ``scheduled``
  -- entry is written when it leaves that state (scheduled_history in lib.lua).
  redis.call('HSET', message, 'fp', fingerprint, 'state', 'scheduled', 'attempts', 0,
             'createdAt', now, 'updatedAt', now, 'scheduledFor', send_at_ms, unpack(fields))
  remember(message, op, 'scheduled')
  redis.call('EXPIRE', message, keep)
  redis.call('HINCRBY', stats, 'state:scheduled', 1)
  redis.call('DEL', history)
  return 'scheduled'
end
-- The push first: one that fails (wrong key type, out of memory) has recorded nothing.
if pending then
  ring_push(pending, flag, queue, task, entry, ring_ms)
elseif task then
  redis.call('LPUSH', queue, task)
end
redis.call('HSET', message, 'fp', fingerprint, 'state', 'queued', 'attempts', 0,
           'createdAt', now, 'updatedAt', now, unpack(fields))
remember(message, op, 'created')
redis.call('EXPIRE', message, ttl)
redis.call('ZADD', inflight, now + queued_grace_ms, member)
redis.call('DEL', history)
push_history(history, 'queued', now, '', history_limit, ttl)
return 'created'
