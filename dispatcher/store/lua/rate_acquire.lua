-- Take one call's slot on every rate dimension, or none. ``dimensions`` holds, per rate
-- key, interval ms, tolerance ms and cost. Returns 0 when admitted, else microseconds to wait.
-- keys: rates...
-- args: dimensions...
-- include: lib

local intervals, tolerances, costs = {}, {}, {}
for i = 1, #rates do
  intervals[i] = tonumber(dimensions[3 * i - 2])
  tolerances[i] = tonumber(dimensions[3 * i - 1])
  costs[i] = tonumber(dimensions[3 * i])
end
return gcra_try(rates, intervals, tolerances, costs, false)
