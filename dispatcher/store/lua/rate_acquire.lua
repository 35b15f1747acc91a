-- Take one call's slot on every rate dimension, or none. ``dimensions`` holds, per rate
-- key, interval ms, tolerance ms and cost. Returns 0 when admitted, else microseconds to wait.
-- keys: rates...
-- args: dimensions...
-- include: lib

local intervals, tolerances, costs = rate_dimensions(#rates, dimensions)
return gcra_try(rates, intervals, tolerances, costs, false)
