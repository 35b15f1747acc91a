-- Shared by the store's scripts (included by name; docs/architecture.md, "Scripts").

-- Redis's own clock in whole milliseconds: leases mean the same on every machine.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local TERMINAL = {delivered = true, partially_delivered = true, failed = true, dead = true,
                  cancelled = true, recalled = true}

-- A call's operation id (``op``) and reply stay on the record after the call changed it:
-- when the reply is lost, redis-py runs the same call again, and the re-run answers what
-- the first run did instead of judging its own effect (docs/reliability.md, S5).
local function earlier_reply(message_key, op)
  if not op then return nil end
  local seen = redis.call('HMGET', message_key, 'op', 'opReply')
  if seen[1] == op then return seen[2] end
  return nil
end

local function remember(message_key, op, reply)
  if op then redis.call('HSET', message_key, 'op', op, 'opReply', reply) end
  return reply
end

-- Append one state change to a message's bounded history list.
local function push_history(key, state, at, detail, limit, ttl)
  local entry = {state = state, at = at}
  if detail and detail ~= '' then entry['detail'] = detail end
  redis.call('RPUSH', key, cjson.encode(entry))
  redis.call('LTRIM', key, -limit, -1)
  redis.call('EXPIRE', key, ttl)
end

-- The first history entry of a message leaving ``scheduled``: the submit wrote none, to
-- keep a waiting message to one key (dispatcher/store/lua/create.lua).
local function scheduled_history(key, created_at, due, limit, ttl)
  push_history(key, 'scheduled', tonumber(created_at), 'for ' .. due .. ' (epoch ms)', limit, ttl)
end

-- Why an operator's action on a dead letter does not apply, or nil when the message is dead.
local function not_dead(message_key, dead_key, member)
  local state = redis.call('HGET', message_key, 'state')
  if not state then
    redis.call('ZREM', dead_key, member)
    return 'missing'
  end
  if state ~= 'dead' then return 'state:' .. state end
  return nil
end

-- A rate script's ``dimensions`` argument: per rate key, interval ms, tolerance ms, cost.
local function rate_dimensions(count, dimensions)
  local intervals, tolerances, costs = {}, {}, {}
  for i = 1, count do
    intervals[i] = tonumber(dimensions[3 * i - 2])
    tolerances[i] = tonumber(dimensions[3 * i - 1])
    costs[i] = tonumber(dimensions[3 * i])
  end
  return intervals, tolerances, costs
end

-- GCRA (the "theoretical arrival time" form of a leaky bucket), the one implementation.
-- Admit a call costing costs[i] on each dimension i (rate_keys[i], intervals[i] ms,
-- tolerances[i] ms). Returns 0 when admitted (every dimension committed), else the
-- microseconds to wait, with nothing committed. With ``repair`` a state further ahead
-- than this rate allows (left by a slower rate) is pulled back first.
local function gcra_try(rate_keys, intervals, tolerances, costs, repair)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local wait = 0
  local new_tats = {}
  for i, key in ipairs(rate_keys) do
    if costs[i] > 0 then
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now then tat = now end
      local ceiling = now + tolerances[i] + intervals[i] * costs[i]
      if repair and tat > ceiling then tat = ceiling end
      local allow_at = tat - tolerances[i]
      if allow_at > now and allow_at - now > wait then wait = allow_at - now end
      new_tats[i] = tat + intervals[i] * costs[i]
    end
  end
  if wait > 0 then return math.ceil(wait * 1000) end
  for i, key in ipairs(rate_keys) do
    if new_tats[i] then
      redis.call('SET', key, tostring(new_tats[i]), 'PX', math.ceil(new_tats[i] - now) + 1000)
    end
  end
  return 0
end

-- The submit gate (dispatcher/gate.py): the sign's replay guard (set to ``token``), then the
-- client's rate. Returns nil when passed, else 'replayed' or 'wait:<ms>' with nothing kept.
local function pass_gate(rate, guard, token, interval_ms, tolerance_ms, guard_ttl_ms)
  if guard and not redis.call('SET', guard, token, 'NX', 'PX', guard_ttl_ms) then
    return 'replayed'
  end
  if rate then
    local wait = gcra_try({rate}, {interval_ms}, {tolerance_ms}, {1}, true)
    if wait > 0 then
      if guard then redis.call('DEL', guard) end
      return 'wait:' .. math.ceil(wait / 1000)
    end
  end
  return nil
end
