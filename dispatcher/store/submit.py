"""Submit stage: record a message ``queued`` (with its task and its gate), or undo that.

One script does it all (``lua/create.lua``): the gate (dispatcher/gate.py), the
record, the in-flight deadline and the message's place in line: an entry on its
lane's pending list with the lane's ring when none is outstanding (the doorbell,
:mod:`.pending`), or its own task; pushed onto the queue list when the broker is
this Redis — one round trip, both or neither. On a Redis Cluster the gate's keys
live in another slot than the message's, so the gate runs first on its own
(``lua/gate.lua``, :func:`gate_apart`); the doorbell's fleet-wide pending lists are
refused there at settings validation (docs/deployment.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, NamedTuple

import redis
from redis.asyncio import Redis as AsyncRedis

from dispatcher import keys
from dispatcher.cluster import is_cluster
from dispatcher.connections import text
from dispatcher.ids import MessageRef
from dispatcher.models import Message
from dispatcher.scheduling import IMMEDIATE_MS
from dispatcher.store.lanes import Lane
from dispatcher.store.pending import RING_MS, PendingLane
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
    PASSED = "ok"
    """Only from the gate run on its own (:func:`gate_apart`): go on and create."""


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
        self._gate = load("gate")
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
        pending: PendingLane | None = None,
        gate: Gate | None = None,
        traceparent: str | None = None,
        send_at_ms: int | None = None,
        publish_apart: bool = False,
    ) -> CreateCall:
        """The create call: record ``queued``; with ``enqueue`` (queue list key, task
        message) also push the task; with ``pending`` (the doorbell) put the message on
        that pending list instead, ``enqueue`` then being the ring to push if none is
        outstanding (None: the caller publishes a ring); with ``gate`` pass it first
        (nothing kept if not). ``app``: the provider app the channel sends it through
        (recorded, so a configuration change does not move it). ``traceparent``: the
        submit's trace, which every attempt continues. With
        ``send_at_ms`` later than :data:`IMMEDIATE_MS` from now (Redis's clock), record
        ``scheduled`` in its shard's schedule instead, and push nothing. The call carries
        its own operation id: run it again after a lost reply and it answers as it did.
        ``publish_apart``: the caller publishes the task after this call (another broker)
        and then marks it published (``submit_many.mark_published``); until then the
        record's deadline is the publish grace, so recovery publishes it if the caller
        dies in between (the record-then-publish outbox, docs/deployment.md)."""
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
        shard = keys.shard_of(ref)
        return CreateCall(
            lane=Lane.of(app, client, message.priority.value),
            keys={
                "message": shard.message(ref.member),
                "history": shard.history(ref.member),
                "inflight": shard.inflight,
                "stats": shard.stats,
                "queue": enqueue[0] if enqueue else None,
                "rate": gate.rate_key if gate else None,
                "guard": gate.guard if gate else None,
                "schedule": shard.schedule if send_at_ms is not None else None,
                "pending": pending.pending if pending else None,
                "flag": pending.flag if pending else None,
            },
            args={
                "op": operation_id(),
                "fingerprint": message.fingerprint(),
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "queued_grace_ms": self.policy.publish_grace_ms
                if publish_apart
                else self.policy.queued_grace_ms,
                "member": ref.member,
                "entry": keys.pending_entry(ref) if pending else None,
                "task": enqueue[1] if enqueue else None,
                "gate_interval_ms": gate.interval_ms if gate else 0,
                "gate_tolerance_ms": gate.tolerance_ms if gate else 0,
                "guard_ttl_ms": gate.guard_ttl_ms if gate else 0,
                "send_at_ms": send_at_ms or 0,
                "immediate_ms": IMMEDIATE_MS,
                "ring_ms": RING_MS,
                "fields": fields,
            },
        )

    def create(self, call: CreateCall, connection: redis.Redis | None = None) -> CreateResult:
        client = connection or self.redis
        if is_cluster(client):
            gate, call = gate_apart(call)
            if gate is not None:
                passed = CreateResult.from_reply(self._gate(client, gate.keys, gate.args))
                if passed.outcome is not CreateOutcome.PASSED:
                    return passed
        reply = self._create(client, call.keys, call.args)
        return CreateResult.from_reply(reply)

    async def create_async(self, connection: AsyncRedis, call: CreateCall) -> CreateResult:
        """:meth:`create` through an asyncio client of the same Redis."""
        if is_cluster(connection):
            gate, call = gate_apart(call)
            if gate is not None:
                reply = await self._gate.call_async(connection, gate.keys, gate.args)
                passed = CreateResult.from_reply(reply)
                if passed.outcome is not CreateOutcome.PASSED:
                    return passed
        return CreateResult.from_reply(
            await self._create.call_async(connection, call.keys, call.args)
        )

    def discard(self, ref: MessageRef, message: Message, lane: PendingLane | None = None) -> bool:
        """Remove a record that was created but never published (no worker touched it);
        with ``lane``, its pending entry too and the lane's flag (its ring failed)."""
        removed = self._discard(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "inflight": keys.shard_of(ref).inflight,
                "pending": lane.pending if lane else None,
                "flag": lane.flag if lane else None,
            },
            {
                "fingerprint": message.fingerprint(),
                "member": ref.member,
                "entry": keys.pending_entry(ref) if lane else None,
            },
        )
        return bool(removed)


_GATE_KEYS = ("rate", "guard")
_GATE_ARGS = ("gate_interval_ms", "gate_tolerance_ms", "guard_ttl_ms")


def gate_apart(call: CreateCall) -> tuple[CreateCall | None, CreateCall]:
    """A create call split in two for a Redis Cluster: the gate's call (``lua/gate.lua``,
    None when the call has no gate) and the create's call without a gate."""
    if all(call.keys[name] is None for name in _GATE_KEYS):
        return None, call
    gate = CreateCall(
        keys={name: call.keys[name] for name in _GATE_KEYS},
        args={"op": call.args["op"], **{name: call.args[name] for name in _GATE_ARGS}},
        lane=call.lane,
    )
    create = CreateCall(
        keys={**call.keys, **dict.fromkeys(_GATE_KEYS)},
        args={**call.args, **dict.fromkeys(_GATE_ARGS, 0)},
        lane=call.lane,
    )
    return gate, create
