"""Submit stage: record a message ``queued`` (with its task and its gate), or undo that.

One script does it all (``lua/create.lua``): the gate (dispatcher/gate.py), the
record, the in-flight deadline and, when the broker is this Redis, the task
pushed onto the queue list — one round trip, both or neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

import redis
from redis.asyncio import Redis as AsyncRedis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.ids import MessageRef
from dispatcher.models import Message
from dispatcher.scheduling import IMMEDIATE_MS
from dispatcher.store.lanes import Lane
from dispatcher.store.policy import StorePolicy
from dispatcher.store.recipients import record_fields
from dispatcher.store.scripts import ArgValue, KeyValue, load, operation_id
from dispatcher.tracing import TRACEPARENT

if TYPE_CHECKING:
    from dispatcher.gate import Gate


class CreateOutcome(StrEnum):
    """``DUPLICATE``: the same id and content were accepted before, nothing new is queued;
    ``CONFLICT``: the id is taken by other content; ``REPLAYED``: the gate's replay guard
    saw this sign already; ``RATE_LIMITED``: the gate's rate, retry after
    ``CreateResult.retry_after``; ``SCHEDULED``: created, waiting for its ``sendAt``
    (no task until then)."""

    CREATED = "created"
    SCHEDULED = "scheduled"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    REPLAYED = "replayed"
    RATE_LIMITED = "wait"


class CreateResult(NamedTuple):
    """The store's answer to a create; ``retry_after`` in seconds for ``RATE_LIMITED``."""

    outcome: CreateOutcome
    retry_after: float = 0.0

    @classmethod
    def from_reply(cls, reply: bytes | str) -> CreateResult:
        answer = text(reply)
        if answer.startswith("wait:"):
            return cls(CreateOutcome.RATE_LIMITED, int(answer[5:]) / 1000)
        return cls(CreateOutcome(answer))


@dataclass(frozen=True, slots=True)
class CreateCall:
    """One prepared run of the create script, for a blocking or an asyncio client."""

    keys: dict[str, KeyValue]
    args: dict[str, ArgValue]
    lane: Lane
    """The lane the message is counted in once accepted (dispatcher/store/lanes.py)."""


class SubmitStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._create = load("create")
        self._discard = load("discard")

    def prepare(
        self,
        ref: MessageRef,
        message: Message,
        *,
        channel: str,
        app: str | None = None,
        client: str | None = None,
        enqueue: tuple[str, str] | None = None,
        gate: Gate | None = None,
        traceparent: str | None = None,
        send_at_ms: int | None = None,
    ) -> CreateCall:
        """The create call: record ``queued``; with ``enqueue`` (queue list key, task
        message) also push the task; with ``gate`` pass it first (nothing kept if not).
        ``app``: the provider app the channel sends it through (recorded, so a configuration
        change does not move it). ``traceparent``: the submit's trace, which every attempt
        continues. With
        ``send_at_ms`` later than :data:`IMMEDIATE_MS` from now (Redis's clock), record
        ``scheduled`` in :data:`keys.SCHEDULE` instead, and push nothing. The call carries
        its own operation id: run it again after a lost reply and it answers as it did."""
        fields: list[str] = [
            "type",
            str(int(message.messageType)),
            "from",
            message.sender,
            *record_fields(message),
            "targetType",
            message.target_type,
            "channel",
            channel,
            "priority",
            message.priority.value,
            "message",
            message.stored(),
        ]
        if app:
            fields += ["app", app]
        if client:
            fields += ["client", client]
        if traceparent:
            fields += [TRACEPARENT, traceparent]
        return CreateCall(
            lane=Lane.of(app, client, message.priority.value),
            keys={
                "message": keys.message(ref),
                "history": keys.history(ref),
                "inflight": keys.IN_FLIGHT,
                "stats": keys.STATS,
                "queue": enqueue[0] if enqueue else None,
                "rate": gate.rate_key if gate else None,
                "guard": gate.guard if gate else None,
                "schedule": keys.SCHEDULE if send_at_ms is not None else None,
            },
            args={
                "op": operation_id(),
                "fingerprint": message.fingerprint(),
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "queued_grace_ms": self.policy.queued_grace_ms,
                "member": ref.member,
                "task": enqueue[1] if enqueue else None,
                "gate_interval_ms": gate.interval_ms if gate else 0,
                "gate_tolerance_ms": gate.tolerance_ms if gate else 0,
                "guard_ttl_ms": gate.guard_ttl_ms if gate else 0,
                "send_at_ms": send_at_ms or 0,
                "immediate_ms": IMMEDIATE_MS,
                "fields": fields,
            },
        )

    def create(self, call: CreateCall, connection: redis.Redis | None = None) -> CreateResult:
        reply = self._create(connection or self.redis, call.keys, call.args)
        return CreateResult.from_reply(reply)

    async def create_async(self, connection: AsyncRedis, call: CreateCall) -> CreateResult:
        """:meth:`create` through an asyncio client of the same Redis."""
        return CreateResult.from_reply(
            await self._create.call_async(connection, call.keys, call.args)
        )

    def discard(self, ref: MessageRef, message: Message) -> bool:
        """Remove a record that was created but never published (no worker touched it)."""
        removed = self._discard(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "inflight": keys.IN_FLIGHT,
            },
            {"fingerprint": message.fingerprint(), "member": ref.member},
        )
        return bool(removed)
