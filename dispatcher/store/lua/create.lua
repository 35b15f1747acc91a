-- Record a submit as ``queued``; with ``task`` also push its delivery task onto the queue
-- list (the broker is this Redis: both or neither). With a gate, the submit first passes
-- its sign's replay guard and its client's rate (dispatcher/gate.py); a refusal keeps
-- nothing. Returns created, duplicate, conflict, replayed or wait:<ms>.
-- keys: message history inflight queue? rate? guard?
-- args: fingerprint ttl# history_limit# queued_grace_ms# member task? gate_interval_ms# gate_tolerance_ms# guard_ttl_ms# fields...
-- include: lib

if guard and not redis.call('SET', guard, '1', 'NX', 'PX', guard_ttl_ms) then
  return 'replayed'
end
if rate then
  local wait = gcra_try({rate}, {gate_interval_ms}, {gate_tolerance_ms}, {1}, true)
  if wait > 0 then
    if guard then redis.call('DEL', guard) end
    return 'wait:' .. math.ceil(wait / 1000)
  end
end
local fp = redis.call('HGET', message, 'fp')
if fp then
  if fp == fingerprint then return 'duplicate' end
  return 'conflict'
end
-- The push first: one that fails (wrong key type, out of memory) has recorded nothing.
if task then redis.call('LPUSH', queue, task) end
local now = now_ms()
redis.call('HSET', message, 'fp', fingerprint, 'state', 'queued', 'attempts', 0,
           'createdAt', now, 'updatedAt', now, unpack(fields))
redis.call('EXPIRE', message, ttl)
redis.call('ZADD', inflight, now + queued_grace_ms, member)
redis.call('DEL', history)
push_history(history, 'queued', now, '', history_limit, ttl)
return 'created'
