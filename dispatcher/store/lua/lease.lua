-- Lease the message to ``owner`` for one attempt. With a prepay (``channel`` given) the
-- lease also tries the rate slot of the send when the message is of that channel and of a
-- type whose cost is known now (``types`` as ",1,5,"); ``prepay`` holds, per rate key,
-- interval ms, tolerance ms, cost to users, cost otherwise.
-- Every grant has its number (``lease``), which the outcome must name (finish.lua). A retry
-- is not leased before its due time, on Redis's clock: that task is early (a copy) and
-- stands down, no attempt used; the schedule publishes the retry's task when it is due
-- (promote_due.lua).
-- With ``task`` (the arriving task's id) only the message's one live task is served: the
-- record names the task last published for it (``task``: by a promotion from the schedule,
-- the reaper or a replay; a retry names the one its promotion will publish), or the task
-- that got the last lease; any other is a superseded copy.
-- The in-flight deadline of a lease is its end or, sooner, ``check_ms`` from now (the
-- worker timeout): recovery then looks whether the holder's process still beats and breaks
-- the lease of a dead one (claim_overdue.lua); a script that leases must do the same.
-- With ``app`` the prepay applies only to a message recorded for that provider app (and,
-- with ``unrecorded``, to one recorded without an app).
-- Returns {'ok', attempts, stored message, prepaid 0/1, channel, client, lease number,
-- app, priority, ms waited before this first attempt ('' for a later one)},
-- {'terminal', state}, {'superseded', live task}, {'busy', holder, ms left},
-- {'early', ms until due} or {'missing'}.
-- keys: message history inflight rates...
-- args: task? owner lease_ms# check_ms# ttl# history_limit# member channel? app? unrecorded? types prepay...
-- include: lib lease_one

return lease_one(message, history, inflight, rates, task, owner, lease_ms, check_ms, ttl,
                 history_limit, member, channel, app, unrecorded, types, prepay)
