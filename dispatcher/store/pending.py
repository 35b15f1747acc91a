"""Doorbell stage: messages waiting for a worker on a lane's pending list, drained by ring
tasks (docs/architecture.md, "The doorbell").

The create script (``lua/create.lua``) and the promotion from the schedule
(``lua/promote_due.lua``) put a message on its lane's pending list and ring the lane (a
Celery task naming the lane) only when no ring is outstanding, marked by the lane's flag.
A ring task drains up to a batch of entries and leases each in the same script
(``lua/drain.lua``), so a drained message is never fetched but unleased; it rings again
while entries are left, and clears the flag when the list is empty, in that same step, so
an entry pushed right after rings anew. The flag expires: a ring lost with its worker is
replaced by the next entry's ring, or by the reaper (``lua/ring_stalled.lua``).

A lane's pending list and flag are fleet-wide keys, while its messages are in every shard:
an entry names its message's shard (:func:`keys.pending_entry`), and the drain spells the
message's keys and that shard's in-flight index from it. The scripts that push or drain
entries therefore touch several slots; the doorbell is refused on a Redis Cluster status
store (dispatcher/config.py).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.ids import MessageRef
from dispatcher.store.lease import Lease, StandDown, lease_verdict, prepay_operands
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load

if TYPE_CHECKING:
    from dispatcher.ratelimit import Prepay

RING_MS = 5000
"""How long a lane's flag says a ring is outstanding without news from it (a drain renews
it): after that the next entry, or the reaper, rings again. A second ring is harmless."""


@dataclass(frozen=True, slots=True)
class PendingLane:
    """Where messages of one delivery queue wait for a worker: one pending list and its
    flag. Today each queue has one lane (:data:`keys.DEFAULT_LANE`)."""

    queue: str
    name: str = keys.DEFAULT_LANE

    @property
    def pending(self) -> str:
        return keys.pending(self.queue, self.name)

    @property
    def flag(self) -> str:
        return keys.ring_flag(self.queue, self.name)


class Bell(Protocol):
    """Rings one lane: its ring task message for a script to push, or a publish."""

    @property
    def lane(self) -> PendingLane: ...

    def ring_task(self) -> str | None:
        """A ring's task message to push onto the queue list (None: the broker is not
        this Redis, :meth:`publish` it)."""
        ...

    def publish(self) -> None:
        """Publish a ring through the broker (raises when the broker refuses)."""
        ...


class Ring(StrEnum):
    """What a drain or a stalled lane's check did about the next ring: ``NONE`` (none
    needed, or one is outstanding), ``PUSHED`` onto the queue list, or ``PUBLISH``: the
    caller publishes it (a broker other than this Redis)."""

    NONE = "none"
    PUSHED = "pushed"
    PUBLISH = "publish"


@dataclass(frozen=True, slots=True)
class Drained:
    """One drain: a grant or a stand-down per entry taken, oldest first, and the ring."""

    grants: list[Lease | StandDown]
    ring: Ring


class PendingStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._drain = load("drain")
        self._stalled = load("ring_stalled")

    def drain(
        self,
        lane: PendingLane,
        owners: Sequence[str],
        lease_seconds: float,
        *,
        prepay: Prepay | None = None,
        ring_task: str | None = None,
    ) -> Drained:
        """Take up to ``len(owners)`` waiting messages and lease each to its owner (one
        round trip); with ``prepay`` each lease also tries its rate slot. ``ring_task``:
        the ring to push if entries are left (else the caller publishes one)."""
        record_close, history_close, inflight_name = keys.PENDING_ENTRY_PARTS
        rates, prepay_args = prepay_operands(prepay)
        began = time.monotonic()
        ring, drained = self._drain(
            self.redis,
            {
                "pending": lane.pending,
                "flag": lane.flag,
                "queue": lane.queue,
                "rates": rates,
            },
            {
                "ring_task": ring_task,
                "ring_ms": RING_MS,
                "limit": len(owners),
                "lease_ms": int(lease_seconds * 1000),
                "check_ms": self.policy.worker_timeout_ms,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "record_close": record_close,
                "history_close": history_close,
                "inflight_name": inflight_name,
                "channel": prepay_args["channel"],
                "app": prepay_args["app"],
                "unrecorded": prepay_args["unrecorded"],
                "types": prepay_args["types"],
                "prepay_csv": ",".join(str(n) for n in prepay_args["prepay"]),
                "owners": list(owners),
            },
        )
        grants = [
            lease_verdict(MessageRef.parse(text(member)), text(owner), reply, began)
            for member, owner, reply in drained
        ]
        return Drained(grants, Ring(text(ring)))

    def ring_if_stalled(self, lane: PendingLane, ring_task: str | None) -> Ring:
        """Ring ``lane`` when messages wait and no ring is outstanding (the reaper)."""
        reply = self._stalled(
            self.redis,
            {"pending": lane.pending, "flag": lane.flag, "queue": lane.queue},
            {"ring_task": ring_task, "ring_ms": RING_MS},
        )
        return Ring(text(reply))

    def head(self, lane: PendingLane) -> MessageRef | None:
        """The message next in line in ``lane`` (None when nothing waits)."""
        entry = self.redis.lindex(lane.pending, -1)
        return None if entry is None else entry_ref(entry)

    def depth(self, lane: PendingLane) -> int:
        return int(self.redis.llen(lane.pending))


def entry_ref(entry: bytes | str) -> MessageRef:
    """The message a pending entry (:func:`keys.pending_entry`) names."""
    return keys.ref_of_entry(text(entry))
