-- The submit gate on its own, before create.lua, where the gate's keys (dispatcher/keys.py,
-- one tag for rates and guards) are in another slot than the message's: a Redis Cluster.
-- The guard keeps the call's ``op``, so a re-run after a lost reply passes again. Returns
-- ok, replayed or wait:<ms>; a refusal keeps nothing.
-- keys: rate? guard?
-- args: op gate_interval_ms# gate_tolerance_ms# guard_ttl_ms#
-- include: lib

if guard and redis.call('GET', guard) == op then return 'ok' end
return pass_gate(rate, guard, op, gate_interval_ms, gate_tolerance_ms, guard_ttl_ms) or 'ok'
