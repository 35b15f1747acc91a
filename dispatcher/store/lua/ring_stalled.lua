-- Ring a lane whose pending list holds messages while no ring is outstanding (its flag
-- expired: the ring was lost with its worker, or never published). Setting the flag is the
-- claim: of several reapers at once one rings. The ring is pushed onto ``queue`` when
-- ``ring_task`` is given, else the caller publishes it.
-- Returns none, pushed or publish.
-- keys: pending flag queue
-- args: ring_task? ring_ms#

if redis.call('LLEN', pending) == 0 then return 'none' end
if not redis.call('SET', flag, '1', 'NX', 'PX', ring_ms) then return 'none' end
if ring_task then
  redis.call('LPUSH', queue, ring_task)
  return 'pushed'
end
return 'publish'
