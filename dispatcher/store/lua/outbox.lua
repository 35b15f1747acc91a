-- Shared by the scripts that change what a message's webhook events tell (included by
-- name; docs/webhooks.md, "No event lost").

-- Record an event about the message in the webhook outbox, inside the script that made
-- the change, so the event is kept exactly when the change is. ``only_clients`` (",a,b,")
-- limits it to those clients; nil when the caller already knows the client subscribes.
-- The event snapshots the record: retries of its webhook send the same body. Its
-- webhook id is derived from its text by the pump (member, type and time make it unique).
-- The message's ``traceparent``, when it was traced, goes with it: its webhook attempts
-- join the message's trace (never the body).
local function outbox_add(outbox, message, member, event_type, now, only_clients)
  local r = redis.call('HMGET', message, 'client', 'state', 'attempts', 'providerMessageId',
                       'lastError', 'deliveredAt', 'readAt', 'channel', 'recipients',
                       'rcptDelivered', 'rcptFailed', 'traceparent')
  local client = r[1] or ''
  if client == '' then return end
  if only_clients and not string.find(only_clients, ',' .. client .. ',', 1, true) then
    return
  end
  redis.call('RPUSH', outbox, cjson.encode({
    type = event_type, member = member, client = client, at = now,
    state = r[2], attempts = r[3], providerMessageId = r[4], lastError = r[5],
    deliveredAt = r[6], readAt = r[7], channel = r[8], recipients = r[9],
    recipientsDelivered = r[10], recipientsFailed = r[11], traceparent = r[12]}))
end
