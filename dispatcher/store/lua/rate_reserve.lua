-- Reserve a call's share of the rate dimensions, its cost paid at once; the call itself
-- waits until the end of what it reserved (a multi-recipient call counts every recipient:
-- sent at once, 600 messages must fall where the rate had room for them, not ahead of it).
-- ``dimensions`` holds, per rate key, interval ms, tolerance ms and cost.
-- Returns {wait, 0} when not admitted (microseconds to wait, nothing taken), else
-- {0, lag}: microseconds until the reservation's end, when the call may go.
-- keys: rates...
-- args: dimensions...
-- include: lib

local intervals, tolerances, costs = rate_dimensions(#rates, dimensions)
local wait = gcra_try(rates, intervals, tolerances, costs, false)
if wait > 0 then return {wait, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local lag = 0
for i, key in ipairs(rates) do
  if costs[i] > 0 then
    local ends = tonumber(redis.call('GET', key) or '0') - tolerances[i] - intervals[i]
    if ends - now > lag then lag = ends - now end
  end
end
return {0, math.ceil(lag * 1000)}
