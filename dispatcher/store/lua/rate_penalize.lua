-- The provider told us to slow down: nobody is admitted on any dimension before now + penalty.
-- keys: rates...
-- args: penalty_ms#

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ = now + penalty_ms
for _, key in ipairs(rates) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < until_ then
    redis.call('SET', key, tostring(until_), 'PX', math.ceil(until_ - now) + 1000)
  end
end
return 1
