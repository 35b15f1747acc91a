-- One lease grant (lease.lua's contract), shared by lease.lua and drain.lua.
local function lease_one(message, history, inflight, rates, task, owner, lease_ms, check_ms,
                         ttl, history_limit, member, channel, app, unrecorded, types, prepay)
  local s = redis.call('HMGET', message, 'state', 'leaseOwner', 'leaseUntil', 'attempts',
                       'message', 'channel', 'type', 'targetType', 'client', 'lease', 'dueAt',
                       'task', 'app', 'priority', 'createdAt', 'scheduledFor')
  if not s[1] then
    redis.call('ZREM', inflight, member)
    return {'missing'}
  end
  if TERMINAL[s[1]] then return {'terminal', s[1]} end
  if task and s[12] and s[12] ~= task then return {'superseded', s[12]} end
  -- The same owner again: the client retried after a lost reply (owners are unique per attempt).
  if s[1] == 'processing' and s[2] == owner then
    return {'ok', s[4], s[5], '0', s[6] or '', s[9] or '', s[10] or '0', s[13] or '',
            s[14] or '', ''}
  end
  local now = now_ms()
  if s[1] == 'processing' and tonumber(s[3] or '0') > now then
    return {'busy', s[2] or '', tostring(tonumber(s[3]) - now)}
  end
  if s[1] == 'retrying' and tonumber(s[11] or '0') > now then
    return {'early', tostring(tonumber(s[11]) - now)}
  end
  local number = tonumber(s[10] or '0') + 1
  local attempts = tonumber(s[4] or '0') + 1
  local detail = 'attempt ' .. attempts .. ' by ' .. owner
  if s[1] == 'processing' then
    detail = detail .. '; took over from ' .. (s[2] or '?') ..
      ' whose lease expired (that attempt may have reached the provider)'
  end
  -- A task arrived: the recovery's doubling wait (claim_overdue.lua) starts over.
  redis.call('HSET', message, 'state', 'processing', 'attempts', attempts, 'lease', number,
             'leaseOwner', owner, 'leaseUntil', now + lease_ms, 'updatedAt', now, 'waits', 0)
  redis.call('HDEL', message, 'dueAt')
  if task then redis.call('HSET', message, 'task', task) end
  redis.call('EXPIRE', message, ttl)
  redis.call('ZADD', inflight, now + math.min(lease_ms, check_ms), member)
  push_history(history, 'processing', now, detail, history_limit, ttl)
  local prepaid = '0'
  if channel and s[6] == channel and (not app or s[13] == app or (unrecorded and not s[13]))
      and string.find(types, ',' .. (s[7] or '') .. ',', 1, true) then
    local intervals, tolerances, costs = {}, {}, {}
    local to_users = s[8] == 'users'
    for i = 1, #rates do
      local at = 4 * (i - 1)
      intervals[i] = tonumber(prepay[at + 1])
      tolerances[i] = tonumber(prepay[at + 2])
      costs[i] = tonumber(to_users and prepay[at + 3] or prepay[at + 4])
    end
    if gcra_try(rates, intervals, tolerances, costs, false) == 0 then prepaid = '1' end
  end
  -- Submit (or the sendAt it waited for) to this first attempt, for the wait-time metric.
  local waited = ''
  if attempts == 1 and s[15] then
    waited = tostring(math.max(0, now - math.max(tonumber(s[15]), tonumber(s[16] or '0'))))
  end
  return {'ok', tostring(attempts), s[5], prepaid, s[6] or '', s[9] or '', tostring(number),
          s[13] or '', s[14] or '', waited}
end
