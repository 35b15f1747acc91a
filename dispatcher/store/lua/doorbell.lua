-- The doorbell (docs/architecture.md, "The doorbell"): a message waiting for a worker is an
-- entry on its lane's pending list ("<member>" or "<member> <task id>"), and the lane has at
-- most one ring (a Celery task that drains the list) outstanding, marked by its flag key.

-- Put an entry on the pending list and ring unless a ring is outstanding. The ring is
-- pushed onto ``queue`` when ``ring_task`` is given (the broker is this Redis); returns
-- true when a ring is due and the caller publishes it (another broker).
local function ring_push(pending, flag, queue, ring_task, entry, ring_ms)
  -- The ring first: a push that fails (wrong key type, out of memory) leaves no entry.
  local ring = redis.call('SET', flag, '1', 'NX', 'PX', ring_ms)
  if ring and ring_task then redis.call('LPUSH', queue, ring_task) end
  redis.call('LPUSH', pending, entry)
  return ring and not ring_task
end
