-- Record the outcome of one provider call of a multi-recipient message: for each recipient
-- (its index in the ``to`` list) a fixed-width slot of ``width`` bytes in ``recipients``,
-- pending while all zero bytes (dispatcher/store/recipients.py). A pending slot takes the
-- outcome; a failed one takes a later delivery (the provider's accept is a fact); a
-- delivered one is never changed, so a re-run after a lost reply changes nothing. The
-- message's counters move with the slots, in the same call. Nothing is written for a
-- message whose record is gone. The first call's write makes every slot, pending.
-- Returns {recipients, delivered, failed}, or 'missing'.
-- keys: message recipients
-- args: ttl# width# outcomes...

if redis.call('EXISTS', message) == 0 then return 'missing' end
local counts = redis.call('HMGET', message, 'recipients', 'rcptDelivered', 'rcptFailed')
if redis.call('EXISTS', recipients) == 0 then
  -- Every slot at once, at its exact size: grown slot by slot, Redis would keep up to
  -- twice the bytes (it doubles a string's room as it grows).
  redis.call('SET', recipients, string.rep('\0', tonumber(counts[1] or '0') * width))
end
local delivered, failed = 0, 0
for i = 1, #outcomes, 2 do
  local offset = tonumber(outcomes[i]) * width
  local value = outcomes[i + 1]
  local now_failed = string.sub(value, 1, 1) == '!'
  local was = redis.call('GETRANGE', recipients, offset, offset + width - 1)
  local first = string.sub(was, 1, 1)
  local pending = was == '' or first == '\0'
  if pending then
    redis.call('SETRANGE', recipients, offset, value)
    if now_failed then failed = failed + 1 else delivered = delivered + 1 end
  elseif first == '!' and not now_failed then
    redis.call('SETRANGE', recipients, offset, value)
    failed = failed - 1
    delivered = delivered + 1
  end
end
local done = tonumber(counts[2] or '0') + delivered
local lost = tonumber(counts[3] or '0') + failed
redis.call('HSET', message, 'rcptDelivered', done, 'rcptFailed', lost)
local left = redis.call('TTL', message)
redis.call('EXPIRE', recipients, math.max(left, ttl))
return {tonumber(counts[1] or '0'), done, lost}
