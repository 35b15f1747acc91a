"""The status store: one Redis hash per message plus a bounded history list.

Every state change is one Lua script, so it is atomic and can only move
forward: once a message is ``delivered``, ``failed`` or ``dead`` no late or
duplicate worker can change it (only an operator's replay of a dead letter
sends it round again). Times come from Redis's own clock, so leases mean the
same on every machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.commands.core import AsyncScript

from dispatcher import keys
from dispatcher.config import Settings
from dispatcher.errors import DeliveryError
from dispatcher.gate import GATE_LUA, Gate
from dispatcher.models import (
    HistoryEntry,
    LastError,
    Message,
    State,
    StatusRecord,
    from_millis,
)
from dispatcher.ratelimit import GCRA_LUA, Prepay

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local TERMINAL = {delivered = true, failed = true, dead = true}
local function push_history(key, state, at, detail, limit, ttl)
  local entry = {state = state, at = at}
  if detail and detail ~= '' then entry['detail'] = detail end
  redis.call('RPUSH', key, cjson.encode(entry))
  redis.call('LTRIM', key, -limit, -1)
  redis.call('EXPIRE', key, ttl)
end
-- Why an operator's action on a dead letter does not apply, or nil when the message is dead.
local function not_dead(message_key, dead_key, id)
  local state = redis.call('HGET', message_key, 'state')
  if not state then
    redis.call('ZREM', dead_key, id)
    return 'missing'
  end
  if state ~= 'dead' then return 'state:' .. state end
  return nil
end
"""

# Record ``queued``. KEYS: message, history, in-flight index, then the queue list when
# ARGV[6] is a queue message (the broker is this Redis: the task is pushed with the record,
# both or neither), then the gate's keys when ARGV[7] is set (dispatcher/gate.py: submit
# rate key [, replay guard]). ARGV: fingerprint, ttl, history limit, queued grace ms, id,
# queue message or '', gate interval ms or '', gate tolerance ms, guard ttl ms, then the
# record's field/value pairs. Returns created, duplicate, conflict, replayed or wait:<ms>.
_CREATE = (
    _PRELUDE
    + GATE_LUA
    + """
local enqueue = ARGV[6] ~= ''
if ARGV[7] ~= '' then
  local gate = enqueue and 5 or 4
  local closed = pass_gate(KEYS[gate], KEYS[gate + 1], tonumber(ARGV[7]), tonumber(ARGV[8]),
                           tonumber(ARGV[9]))
  if closed then return closed end
end
local fp = redis.call('HGET', KEYS[1], 'fp')
if fp then
  if fp == ARGV[1] then return 'duplicate' end
  return 'conflict'
end
-- The push first: one that fails (wrong key type, out of memory) has recorded nothing.
if enqueue then redis.call('LPUSH', KEYS[4], ARGV[6]) end
local now = now_ms()
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'queued', 'attempts', 0,
           'createdAt', now, 'updatedAt', now, unpack(ARGV, 10))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[5])
redis.call('DEL', KEYS[2])
push_history(KEYS[2], 'queued', now, '', tonumber(ARGV[3]), tonumber(ARGV[2]))
return 'created'
"""
)

# KEYS: message, history, in-flight index. ARGV: fingerprint, id.
# Undo a create whose publish failed.
_DISCARD = """
local s = redis.call('HMGET', KEYS[1], 'fp', 'state', 'attempts')
if s[1] == ARGV[1] and s[2] == 'queued' and s[3] == '0' then
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
  return 1
end
return 0
"""

# KEYS: message, history, in-flight index, then a Prepay's rate keys (dispatcher/ratelimit.py).
# ARGV: owner, lease ms, ttl, history limit, id, then the Prepay: channel ('' for none),
# types as ",1,5,", and per rate key: interval ms, tolerance ms, cost to users, cost otherwise.
# Returns {'ok', attempts, message, prepaid 0/1}, or why this worker stands down.
_BEGIN = (
    _PRELUDE
    + GCRA_LUA
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'leaseOwner', 'leaseUntil', 'attempts', 'message',
                     'channel', 'type', 'targetType')
if not s[1] then
  redis.call('ZREM', KEYS[3], ARGV[5])
  return {'missing'}
end
if TERMINAL[s[1]] then return {'terminal', s[1]} end
-- The same owner again: the client retried after a lost reply (owners are unique per attempt).
if s[1] == 'processing' and s[2] == ARGV[1] then return {'ok', s[4], s[5], '0'} end
local now = now_ms()
if s[1] == 'processing' and tonumber(s[3] or '0') > now then
  return {'busy', s[2] or '', tostring(tonumber(s[3]) - now)}
end
local attempts = tonumber(s[4] or '0') + 1
local detail = 'attempt ' .. attempts .. ' by ' .. ARGV[1]
if s[1] == 'processing' then
  detail = detail .. '; took over from ' .. (s[2] or '?') ..
    ' whose lease expired (that attempt may have reached the provider)'
end
redis.call('HSET', KEYS[1], 'state', 'processing', 'attempts', attempts,
           'leaseOwner', ARGV[1], 'leaseUntil', now + tonumber(ARGV[2]), 'updatedAt', now)
redis.call('HDEL', KEYS[1], 'dueAt')
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[5])
push_history(KEYS[2], 'processing', now, detail, tonumber(ARGV[4]), tonumber(ARGV[3]))
local prepaid = '0'
if ARGV[6] ~= '' and s[6] == ARGV[6] and string.find(ARGV[7], ',' .. (s[7] or '') .. ',', 1, true) then
  local rate_keys, intervals, tolerances, costs = {}, {}, {}, {}
  local to_users = s[8] == 'users'
  for i = 4, #KEYS do
    local at = 8 + 4 * (i - 4)
    rate_keys[i - 3] = KEYS[i]
    intervals[i - 3] = tonumber(ARGV[at])
    tolerances[i - 3] = tonumber(ARGV[at + 1])
    costs[i - 3] = tonumber(to_users and ARGV[at + 2] or ARGV[at + 3])
  end
  if gcra_try(rate_keys, intervals, tolerances, costs) == 0 then prepaid = '1' end
end
return {'ok', tostring(attempts), s[5], prepaid}
"""
)

# KEYS: message, history, dead letters, stats, in-flight index. ARGV: owner, new state, ttl,
# history limit, detail, lastError JSON or '', providerMessageId or '', retry delay ms or '',
# dead cap, id, latency bucket bounds (ms, comma separated), retry grace ms, the provider's
# HTTP status of the error or '' (counted as ``provider:<status>``: the console's 429 chart).
_FINISH = (
    _PRELUDE
    + """
local s = redis.call('HMGET', KEYS[1], 'state', 'leaseOwner')
if not s[1] then return 'missing' end
if TERMINAL[s[1]] then return 'terminal:' .. s[1] end
local new = ARGV[2]
if new == 'retrying' and s[2] ~= ARGV[1] then return 'stale' end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', new, 'updatedAt', now)
redis.call('HDEL', KEYS[1], 'leaseOwner', 'leaseUntil')
if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'lastError', ARGV[6]) end
redis.call('HINCRBY', KEYS[4], 'state:' .. new, 1)
if ARGV[13] ~= '' then redis.call('HINCRBY', KEYS[4], 'provider:' .. ARGV[13], 1) end
if new == 'delivered' then
  redis.call('HSET', KEYS[1], 'deliveredAt', now)
  if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'providerMessageId', ARGV[7]) end
  local created = tonumber(redis.call('HGET', KEYS[1], 'createdAt') or now)
  local latency = now - created
  redis.call('HINCRBY', KEYS[4], 'latency:count', 1)
  redis.call('HINCRBY', KEYS[4], 'latency:sum_ms', latency)
  for bound in string.gmatch(ARGV[11], '[^,]+') do
    if latency <= tonumber(bound) then redis.call('HINCRBY', KEYS[4], 'latency:le:' .. bound, 1) end
  end
end
if new == 'retrying' then
  local due = now + tonumber(ARGV[8] ~= '' and ARGV[8] or '0')
  redis.call('HSET', KEYS[1], 'dueAt', due)
  redis.call('ZADD', KEYS[5], due + tonumber(ARGV[12]), ARGV[10])
else
  redis.call('ZREM', KEYS[5], ARGV[10])
end
if new == 'dead' then
  redis.call('ZADD', KEYS[3], now, ARGV[10])
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[9]) + 1))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
push_history(KEYS[2], new, now, ARGV[5], tonumber(ARGV[4]), tonumber(ARGV[3]))
return 'ok'
"""
)

# KEYS: message, history, dead letters, in-flight index. ARGV: ttl, history limit, id, detail,
# queued grace ms.
_REPLAY = (
    _PRELUDE
    + """
local refused = not_dead(KEYS[1], KEYS[3], ARGV[3])
if refused then return refused end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempts', 0, 'requeues', 0, 'waits', 0,
           'updatedAt', now)
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[5]), ARGV[3])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
push_history(KEYS[2], 'queued', now, ARGV[4], tonumber(ARGV[2]), tonumber(ARGV[1]))
return 'ok'
"""
)

# KEYS: message, history, dead letters. ARGV: id, detail, ttl, history limit.
# An operator gives up on a dead message: it leaves the dead-letter index, its record stays
# (state ``dead``, with the discard in its history) until it expires.
_DISCARD_DEAD = (
    _PRELUDE
    + """
local refused = not_dead(KEYS[1], KEYS[3], ARGV[1])
if refused then return refused end
if redis.call('ZREM', KEYS[3], ARGV[1]) == 0 then return 'not_listed' end
local now = now_ms()
redis.call('HSET', KEYS[1], 'updatedAt', now)
push_history(KEYS[2], 'dead', now, ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[3]))
return 'ok'
"""
)

# KEYS: in-flight index, dead letters, stats. ARGV: limit, requeue delay ms, max requeues,
# ttl, history limit, message key prefix, history key prefix, dead cap.
# Returns ids whose lease, retry or queue wait ran out: the caller re-publishes them.
# Keys are derived from the prefixes here because the due ids are only known inside.
_CLAIM_DUE = (
    _PRELUDE
    + """
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local claimed = {}
-- A queued message is behind a backlog while the broker queue still holds work: leave it.
local backlog = KEYS[4] and redis.call('LLEN', KEYS[4]) > 0
for _, id in ipairs(due) do
  local mkey = ARGV[6] .. id
  local hkey = ARGV[7] .. id
  local s = redis.call('HMGET', mkey, 'state', 'requeues', 'waits')
  local ttl, limit = tonumber(ARGV[4]), tonumber(ARGV[5])
  if not s[1] or TERMINAL[s[1]] then
    redis.call('ZREM', KEYS[1], id)
  elseif s[1] == 'queued' and backlog then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
  elseif s[1] ~= 'processing' then
    -- Queued or retrying past its deadline: its queue entry may be lost, or only behind a
    -- backlog. Publish again (a duplicate stands down) with a doubling delay, so a long
    -- backlog is not flooded; no worker was lost, so it never counts toward poison.
    local waits = tonumber(s[3] or '0') + 1
    redis.call('HSET', mkey, 'waits', waits)
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]) * 2 ^ math.min(waits - 1, 8), id)
    redis.call('HINCRBY', KEYS[3], 'recovered', 1)
    push_history(hkey, s[1], now, 'recovery: re-enqueued (' .. s[1] ..
      ' past its deadline; its queue entry may be lost or behind a backlog)', limit, ttl)
    table.insert(claimed, id)
  else
    local requeues = tonumber(s[2] or '0') + 1
    if requeues > tonumber(ARGV[3]) then
      local err = cjson.encode({code = 'worker_lost', retryable = true,
        message = 'recovered ' .. (requeues - 1) .. ' times without finishing (poison message?)'})
      redis.call('HSET', mkey, 'state', 'dead', 'updatedAt', now, 'lastError', err)
      redis.call('HDEL', mkey, 'leaseOwner', 'leaseUntil', 'dueAt')
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], now, id)
      redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[8]) + 1))
      redis.call('HINCRBY', KEYS[3], 'state:dead', 1)
      redis.call('EXPIRE', mkey, ttl)
      push_history(hkey, 'dead', now, 'recovered ' .. (requeues - 1) ..
        ' times without finishing: dead-lettered', limit, ttl)
    else
      redis.call('HSET', mkey, 'requeues', requeues)
      redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
      redis.call('HINCRBY', KEYS[3], 'recovered', 1)
      push_history(hkey, s[1], now, 'recovery: re-enqueued (' .. s[1] ..
        ' past its deadline; requeue ' .. requeues .. ')', limit, ttl)
      table.insert(claimed, id)
    end
  end
end
return claimed
"""
)

_RECORD_FIELDS = (
    "state",
    "type",
    "from",
    "to",
    "targetType",
    "channel",
    "client",
    "attempts",
    "createdAt",
    "updatedAt",
    "deliveredAt",
    "providerMessageId",
    "lastError",
)

LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 3600000)
LATENCY_BUCKETS_ARG = ",".join(str(b) for b in LATENCY_BUCKETS_MS)

CreateOutcome = str
"""``created``, ``duplicate``, ``conflict``; with a gate also ``replayed`` or ``wait:<ms>``."""


@dataclass(frozen=True)
class CreateCall:
    """One call of the create script (:meth:`StatusStore.create_call`)."""

    keys: list[str]
    args: list[str | int | float]


@dataclass(frozen=True)
class Attempt:
    """A lease on a message: this worker may try to deliver it now."""

    message_id: str
    owner: str
    number: int
    payload: dict[str, Any]
    prepaid: bool = False
    """The lease script also took the message's rate slot (a :class:`Prepay`)."""


@dataclass(frozen=True)
class StandDown:
    """The message needs nothing from this worker (done, gone, or held by another)."""

    message_id: str
    reason: Literal["missing", "terminal", "busy"]
    detail: str


class StatusStore:
    """Reads and writes status records; every write is one atomic script."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        ttl: int = 604800,
        history_limit: int = 50,
        queued_grace: float = 300.0,
        retry_grace: float = 30.0,
        max_requeues: int = 5,
    ) -> None:
        self.redis = client
        self.ttl = ttl
        self.history_limit = history_limit
        self.queued_grace = queued_grace
        self.retry_grace = retry_grace
        self.max_requeues = max_requeues
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._create = client.register_script(_CREATE)
        self._async_create: tuple[AsyncRedis, AsyncScript] | None = None
        self._discard = client.register_script(_DISCARD)
        self._begin = client.register_script(_BEGIN)
        self._finish = client.register_script(_FINISH)
        self._replay = client.register_script(_REPLAY)
        self._discard_dead = client.register_script(_DISCARD_DEAD)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> StatusStore:
        return cls(
            client,
            ttl=settings.status_ttl,
            history_limit=settings.history_limit,
            queued_grace=settings.queued_grace,
            retry_grace=settings.retry_grace,
            max_requeues=settings.max_requeues,
        )

    # -- producer side -----------------------------------------------------

    def create(
        self,
        message_id: str,
        message: Message,
        *,
        channel: str,
        client: str | None = None,
        enqueue: tuple[str, str] | None = None,
        gate: Gate | None = None,
    ) -> CreateOutcome:
        """Record ``queued``; with ``enqueue`` (queue list key, message) also push the task.

        With ``gate`` the submit first passes its replay guard and rate (dispatcher/gate.py):
        ``replayed`` or ``wait:<ms>`` when it does not, and then nothing is kept. The push
        happens only when the record is created: a duplicate or a conflict queues nothing.
        """
        call = self.create_call(
            message_id, message, channel=channel, client=client, enqueue=enqueue, gate=gate
        )
        return self.run_create(call)

    def run_create(self, call: CreateCall) -> CreateOutcome:
        return _text(self._create(keys=call.keys, args=call.args))

    async def run_create_async(self, connection: AsyncRedis, call: CreateCall) -> CreateOutcome:
        """:meth:`run_create` on an asyncio client (the HTTP API's event loop)."""
        bound = self._async_create
        if bound is None or bound[0] is not connection:
            bound = self._async_create = (connection, connection.register_script(_CREATE))
        return _text(await bound[1](keys=call.keys, args=call.args))

    def create_call(
        self,
        message_id: str,
        message: Message,
        *,
        channel: str,
        client: str | None = None,
        enqueue: tuple[str, str] | None = None,
        gate: Gate | None = None,
    ) -> CreateCall:
        """The keys and arguments of :meth:`create`'s script, for either kind of client."""
        script_keys = [keys.message(message_id), keys.history(message_id), keys.IN_FLIGHT]
        args: list[str | int | float] = [
            message.fingerprint(),
            self.ttl,
            self.history_limit,
            int(self.queued_grace * 1000),
            message_id,
            "",
            "",
            0,
            0,
        ]
        if enqueue is not None:
            script_keys.append(enqueue[0])
            args[5] = enqueue[1]
        if gate is not None:
            script_keys += gate.keys
            args[6:9] = gate.args
        args += [
            "type",
            str(int(message.messageType)),
            "from",
            message.sender,
            "to",
            message.to,
            "targetType",
            message.target_type,
            "channel",
            channel,
            "message",
            json.dumps(message.to_payload(), ensure_ascii=False, separators=(",", ":")),
        ]
        if client:
            args += ["client", client]
        return CreateCall(script_keys, args)

    def discard(self, message_id: str, message: Message) -> bool:
        """Remove a record that was created but never published."""
        removed = self._discard(
            keys=[keys.message(message_id), keys.history(message_id), keys.IN_FLIGHT],
            args=[message.fingerprint(), message_id],
        )
        return bool(removed)

    # -- worker side -------------------------------------------------------

    def begin_attempt(
        self, message_id: str, owner: str, lease_seconds: float, *, prepay: Prepay | None = None
    ) -> Attempt | StandDown:
        """Lease the message to ``owner``; with ``prepay`` also try its rate slot (one call)."""
        script_keys = [keys.message(message_id), keys.history(message_id), keys.IN_FLIGHT]
        args: list[str | int | float] = [
            owner,
            int(lease_seconds * 1000),
            self.ttl,
            self.history_limit,
            message_id,
        ]
        if prepay is None:
            args += ["", ""]
        else:
            script_keys += prepay.keys
            args += [prepay.channel, "," + ",".join(str(t) for t in sorted(prepay.types)) + ","]
            for dimension in zip(
                prepay.intervals_ms,
                prepay.tolerances_ms,
                prepay.user_costs,
                prepay.other_costs,
                strict=True,
            ):
                args += dimension
        result = self._begin(keys=script_keys, args=args)
        verdict = _text(result[0])
        if verdict == "ok":
            return Attempt(
                message_id,
                owner,
                int(_text(result[1])),
                json.loads(_text(result[2])),
                prepaid=_text(result[3]) == "1",
            )
        if verdict == "terminal":
            return StandDown(message_id, "terminal", f"already {_text(result[1])}")
        if verdict == "busy":
            holder, remaining = _text(result[1]), int(_text(result[2]))
            return StandDown(message_id, "busy", f"held by {holder} for {remaining} ms more")
        return StandDown(message_id, "missing", "no status record (expired or never accepted)")

    def mark_delivered(self, attempt: Attempt, provider_message_id: str | None, detail: str) -> str:
        return self._transition(
            attempt.message_id,
            attempt.owner,
            State.DELIVERED,
            detail,
            provider_message_id=provider_message_id,
        )

    def mark_retrying(
        self, attempt: Attempt, error: DeliveryError, delay: float, detail: str
    ) -> str:
        return self._transition(
            attempt.message_id, attempt.owner, State.RETRYING, detail, error=error, delay=delay
        )

    def mark_failed(self, message_id: str, owner: str, error: DeliveryError, detail: str) -> str:
        return self._transition(message_id, owner, State.FAILED, detail, error=error)

    def mark_dead(self, message_id: str, owner: str, error: DeliveryError, detail: str) -> str:
        return self._transition(message_id, owner, State.DEAD, detail, error=error)

    def _transition(
        self,
        message_id: str,
        owner: str,
        state: State,
        detail: str,
        *,
        error: DeliveryError | None = None,
        provider_message_id: str | None = None,
        delay: float | None = None,
    ) -> str:
        last_error = ""
        if error is not None:
            last_error = LastError(
                code=error.code, message=error.message, retryable=error.retryable
            ).model_dump_json()
        result = self._finish(
            keys=[
                keys.message(message_id),
                keys.history(message_id),
                keys.DEAD_LETTERS,
                keys.STATS,
                keys.IN_FLIGHT,
            ],
            args=[
                owner,
                state.value,
                self.ttl,
                self.history_limit,
                detail,
                last_error,
                provider_message_id or "",
                "" if delay is None else int(delay * 1000),
                keys.MAX_DEAD_LETTERS,
                message_id,
                LATENCY_BUCKETS_ARG,
                int(self.retry_grace * 1000),
                error.status if error is not None and error.status else "",
            ],
        )
        return _text(result)

    # -- operators ---------------------------------------------------------

    def replay(self, message_id: str, detail: str = "replayed from dead letters") -> str:
        """Send a dead message round again: ``dead`` -> ``queued``, attempts reset."""
        result = self._replay(
            keys=[
                keys.message(message_id),
                keys.history(message_id),
                keys.DEAD_LETTERS,
                keys.IN_FLIGHT,
            ],
            args=[self.ttl, self.history_limit, message_id, detail, int(self.queued_grace * 1000)],
        )
        return _text(result)

    def discard_dead_letter(self, message_id: str, detail: str) -> str:
        """Take a dead message off the dead-letter index for good (``detail`` goes to its
        history): ``ok``, ``missing``, ``not_listed`` (already discarded) or ``state:<s>``."""
        result = self._discard_dead(
            keys=[keys.message(message_id), keys.history(message_id), keys.DEAD_LETTERS],
            args=[message_id, detail, self.ttl, self.history_limit],
        )
        return _text(result)

    def claim_overdue(
        self, limit: int = 500, requeue_delay: float = 30.0, queue_key: str | None = None
    ) -> list[str]:
        """Ids to re-publish: lease expired, retry never ran, or queued too long.

        Each claimed id's deadline moves ahead, so concurrent reapers never
        publish the same id twice: ``requeue_delay`` after an expired lease, and
        doubling each time for a queued or retrying message (it may only be
        behind a backlog). One whose lease expired more than ``max_requeues``
        times is dead-lettered instead (a poison message: it keeps losing its
        worker); waiting in a backlog never makes a message poison. With
        ``queue_key`` (the broker's queue list, when the broker is this Redis) a
        queued message is left alone while that queue is not empty: its entry is
        most likely still ahead of it, and a duplicate would only grow the backlog.
        """
        claimed = self._claim_due(
            keys=[
                keys.IN_FLIGHT,
                keys.DEAD_LETTERS,
                keys.STATS,
                *([queue_key] if queue_key else []),
            ],
            args=[
                limit,
                int(requeue_delay * 1000),
                self.max_requeues,
                self.ttl,
                self.history_limit,
                keys.message(""),
                keys.history(""),
                keys.MAX_DEAD_LETTERS,
            ],
        )
        return [_text(message_id) for message_id in claimed]

    def record_rejected(self, reason: str, detail: str, excerpt: str = "") -> None:
        """Keep a trace of a queue message that has no status record to dead-letter.

        One entry in the bounded ``rejected`` list and one ``rejected:<reason>``
        counter in the stats; the caller acks the message so it never loops.
        """
        entry = json.dumps(
            {"reason": reason, "detail": detail, "excerpt": excerpt[:500], "at": _now_ms()},
            ensure_ascii=False,
        )
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(keys.REJECTED, entry)
        pipe.ltrim(keys.REJECTED, 0, keys.MAX_REJECTED - 1)
        pipe.hincrby(keys.STATS, f"rejected:{reason}", 1)
        pipe.execute()

    def rejected(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest rejected queue messages (see :meth:`record_rejected`)."""
        return [json.loads(_text(raw)) for raw in self.redis.lrange(keys.REJECTED, 0, limit - 1)]

    def in_flight(self) -> int:
        """How many messages are not yet terminal."""
        return int(self.redis.zcard(keys.IN_FLIGHT))

    def dead_letters(
        self,
        limit: int = 100,
        offset: int = 0,
        *,
        since: float | None = None,
        until: float | None = None,
        newest_first: bool = False,
    ) -> list[tuple[str, float]]:
        """Dead message ids with the time they died (unix seconds), oldest first (or newest
        first), optionally only those that died between ``since`` and ``until`` (inclusive)."""
        low = "-inf" if since is None else int(since * 1000)
        high = "+inf" if until is None else int(until * 1000)
        rows: list[tuple[bytes, float]]
        if newest_first:
            rows = self.redis.zrevrangebyscore(  # type: ignore[assignment]
                keys.DEAD_LETTERS, high, low, start=offset, num=limit, withscores=True
            )
        else:
            rows = self.redis.zrangebyscore(  # type: ignore[assignment]
                keys.DEAD_LETTERS, low, high, start=offset, num=limit, withscores=True
            )
        return [(_text(member), float(score) / 1000) for member, score in rows]

    def dead_letter_count(self) -> int:
        return int(self.redis.zcard(keys.DEAD_LETTERS))

    # -- reading -----------------------------------------------------------

    def get(self, message_id: str) -> StatusRecord | None:
        return self.get_many([message_id])[0]

    def get_many(
        self, message_ids: list[str], *, with_history: bool = True
    ) -> list[StatusRecord | None]:
        """Records in the order asked (None where there is none); without their history
        lists when ``with_history`` is false (one read per message instead of two)."""
        if not message_ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.hmget(keys.message(message_id), _RECORD_FIELDS)
            if with_history:
                pipe.lrange(keys.history(message_id), 0, -1)
        replies = pipe.execute()
        step = 2 if with_history else 1
        return [
            _record(message_id, replies[step * i], replies[step * i + 1] if with_history else [])
            for i, message_id in enumerate(message_ids)
        ]

    def stats(self) -> dict[str, int]:
        """Counters kept by the transition scripts: ``state:<state>``, ``latency:*``."""
        raw = self.redis.hgetall(keys.STATS)
        return {_text(k): int(v) for k, v in raw.items()}

    def owner_of(self, message_id: str) -> str | None:
        """The client that submitted the message (None for Python-API submissions)."""
        value = self.redis.hget(keys.message(message_id), "client")
        return _text(value) if value is not None else None

    def load_payload(self, message_id: str) -> dict[str, Any] | None:
        raw = self.redis.hget(keys.message(message_id), "message")
        return None if raw is None else json.loads(_text(raw))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(message_id: str, values: list[Any], history: list[Any]) -> StatusRecord | None:
    fields = dict(
        zip(_RECORD_FIELDS, (None if v is None else _text(v) for v in values), strict=True)
    )
    if fields["state"] is None:
        return None
    last_error = fields["lastError"]
    entries = []
    for raw in history:
        entry = json.loads(_text(raw))
        entries.append(
            HistoryEntry(
                state=entry["state"], at=from_millis(entry["at"]), detail=entry.get("detail")
            )
        )
    return StatusRecord(
        getMessageId=message_id,
        state=State(fields["state"]),
        messageType=int(fields["type"] or 0),
        sender=fields["from"] or "",
        to=fields["to"] or "",
        targetType=fields["targetType"] or "users",
        channel=fields["channel"] or "",
        client=fields["client"],
        attempts=int(fields["attempts"] or 0),
        createdAt=from_millis(fields["createdAt"]),
        updatedAt=from_millis(fields["updatedAt"]),
        deliveredAt=from_millis(fields["deliveredAt"]),
        providerMessageId=fields["providerMessageId"],
        lastError=LastError.model_validate_json(last_error) if last_error else None,
        history=entries,
    )
