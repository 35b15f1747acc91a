"""Lease stage: a worker leases a message for one attempt, then records its outcome.

``lua/lease.lua`` grants the lease (and may take the send's rate slot in the
same call, a :class:`~dispatcher.ratelimit.Prepay`); ``lua/extend.lua`` keeps it
before each provider call; ``lua/finish.lua`` records ``delivered``,
``retrying``, ``failed`` or ``dead``. Only the holder of the lease (its owner and
lease number) moves the state; a late attempt's answer goes to the history, and
its provider accept makes the message delivered. Every transition moves forward
only (docs/architecture.md, "Status state machine"; docs/reliability.md, "The
state machine").
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import redis

from dispatcher import keys
from dispatcher.cluster import is_cluster
from dispatcher.connections import text
from dispatcher.errors import DeliveryError
from dispatcher.ids import MessageRef
from dispatcher.priority import DEFAULT_PRIORITY
from dispatcher.record import LastError, State
from dispatcher.store.durations import AttemptDurations
from dispatcher.store.lanes import Lane
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load, operation_id

if TYPE_CHECKING:
    from dispatcher.ratelimit import Prepay

LATENCY_BUCKETS_MS = (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 3600000)
"""Upper bounds of the submit-to-delivered latency histogram kept in the stats hash."""
_LATENCY_BOUNDS = ",".join(str(b) for b in LATENCY_BUCKETS_MS)


@dataclass(frozen=True, slots=True)
class Lease:
    """This worker may try to deliver the message now."""

    ref: MessageRef
    owner: str
    number: int
    """The attempt's number, 1 for the first."""
    payload: str
    """The message as recorded at submit (:meth:`dispatcher.models.Message.stored`)."""
    prepaid: bool = False
    """The lease script also took the send's rate slot (a :class:`Prepay`)."""
    channel: str = ""
    """The channel the message center chose at submit ("" in records older than routing)."""
    client: str | None = None
    """The client that submitted the message."""
    began: float | None = None
    """``time.monotonic()`` when the lease was asked for: the attempt's start."""
    lease_number: int = 0
    """Which grant this is (every lease counts, a deferred attempt's too); an outcome names it."""
    app: str | None = None
    """The provider app recorded at submit (None: the channel records none)."""
    priority: str = DEFAULT_PRIORITY.value
    """The priority recorded at submit (dispatcher/priority.py)."""
    waited: float | None = None
    """First attempt only: seconds from submit (or the sendAt it waited for) to this lease,
    on Redis's clock."""


class StandDownReason(StrEnum):
    """``MISSING``: no status record (expired, or never accepted); ``TERMINAL``: done
    already; ``SUPERSEDED``: the task is a copy, another task was published for the message
    since; ``BUSY``: another worker holds a live lease; ``EARLY``: a retry whose due time
    (on Redis's clock) has not come, ``StandDown.wait`` seconds ahead."""

    MISSING = "missing"
    TERMINAL = "terminal"
    SUPERSEDED = "superseded"
    BUSY = "busy"
    EARLY = "early"


@dataclass(frozen=True, slots=True)
class StandDown:
    """The message needs nothing from this worker."""

    ref: MessageRef
    reason: StandDownReason
    detail: str
    wait: float = 0.0
    """``EARLY``: seconds until the retry is due."""


class Transition(StrEnum):
    """What the store said to an outcome."""

    OK = "ok"
    MISSING = "missing"
    STALE = "stale"
    """The attempt no longer holds the lease: its outcome went to the history only."""
    ALREADY_DELIVERED = "terminal:delivered"
    ALREADY_PARTIALLY_DELIVERED = "terminal:partially_delivered"
    ALREADY_FAILED = "terminal:failed"
    ALREADY_DEAD = "terminal:dead"
    ALREADY_CANCELLED = "terminal:cancelled"
    ALREADY_RECALLED = "terminal:recalled"


class LeaseStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._lease = load("lease")
        self._finish = load("finish")
        self._note = load("note")
        self._read = load("read")
        self.durations = AttemptDurations(client)
        self._extend = load("extend")

    def begin(
        self,
        ref: MessageRef,
        owner: str,
        lease_seconds: float,
        *,
        prepay: Prepay | None = None,
        task_id: str | None = None,
    ) -> Lease | StandDown:
        """Lease the message to ``owner``; with ``prepay`` also try its rate slot (one call).

        ``task_id``: the delivery task asking; only the message's live task is served, a
        superseded copy stands down (docs/reliability.md, "The state machine")."""
        if is_cluster(self.redis):
            prepay = None  # its rate keys are in another slot: the send acquires them itself
        began = time.monotonic()
        rates, prepay_args = prepay_operands(prepay)
        reply = self._lease(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "inflight": keys.shard_of(ref).inflight,
                "rates": rates,
            },
            {
                "task": task_id,
                "owner": owner,
                "lease_ms": int(lease_seconds * 1000),
                "check_ms": self.policy.worker_timeout_ms,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "member": ref.member,
                **prepay_args,
            },
        )
        return self.granted(lease_verdict(ref, owner, reply, began))

    def granted(self, grant: Lease | StandDown) -> Lease | StandDown:
        """``grant`` as answered, its wait since acceptance counted (a first attempt's)."""
        if isinstance(grant, Lease) and grant.waited is not None:
            self.durations.add(_lane(grant).waited(grant.waited))
        return grant

    def extend(self, lease: Lease, lease_seconds: float) -> float | None:
        """Keep ``lease`` for ``lease_seconds`` from now; the seconds it has left, or None
        when it is no longer this attempt's."""
        reply = text(
            self._extend(
                self.redis,
                {"message": keys.message(lease.ref), "inflight": keys.shard_of(lease.ref).inflight},
                {
                    "owner": lease.owner,
                    "lease": lease.lease_number,
                    "lease_ms": int(lease_seconds * 1000),
                    "check_ms": self.policy.worker_timeout_ms,
                    "member": lease.ref.member,
                },
            )
        )
        return None if reply == "lost" else int(reply) / 1000

    def mark_delivered(
        self, lease: Lease, provider_message_id: str | None, detail: str
    ) -> Transition:
        return self._finish_as(lease, State.DELIVERED, detail, provider_id=provider_message_id)

    def mark_partially_delivered(self, lease: Lease, detail: str) -> Transition:
        """A multi-recipient message's end when some recipients failed for good."""
        return self._finish_as(lease, State.PARTIALLY_DELIVERED, detail)

    def mark_retrying(
        self,
        lease: Lease,
        error: DeliveryError,
        delay: float,
        detail: str,
        *,
        task_id: str | None = None,
    ) -> Transition:
        """``retrying`` after ``delay``, waiting in the schedule until then; ``task_id`` names
        the task its promotion publishes (the message's live task from then on)."""
        return self._finish_as(
            lease, State.RETRYING, detail, error=error, delay=delay, task_id=task_id
        )

    def mark_deferred(
        self,
        lease: Lease,
        error: DeliveryError,
        delay: float,
        detail: str,
        *,
        task_id: str | None = None,
    ) -> Transition:
        """``retrying`` after ``delay``, the attempt given back (a provider's pause)."""
        return self._finish_as(
            lease, State.RETRYING, detail, error=error, delay=delay, deferred=True, task_id=task_id
        )

    def mark_failed(self, lease: Lease, error: DeliveryError, detail: str) -> Transition:
        return self._finish_as(lease, State.FAILED, detail, error=error)

    def mark_dead(self, lease: Lease, error: DeliveryError, detail: str) -> Transition:
        return self._finish_as(lease, State.DEAD, detail, error=error)

    def _finish_as(
        self,
        lease: Lease,
        state: State,
        detail: str,
        *,
        error: DeliveryError | None = None,
        provider_id: str | None = None,
        delay: float | None = None,
        deferred: bool = False,
        task_id: str | None = None,
    ) -> Transition:
        last_error = None
        if error is not None:
            last_error = LastError(
                code=error.code, message=error.message, retryable=error.retryable
            ).model_dump_json()
        args: dict[str, Any] = {
            "op": operation_id(),
            "task": task_id,
            "owner": lease.owner,
            "lease": lease.lease_number,
            "new_state": state.value,
            "ttl": self.policy.ttl,
            "history_limit": self.policy.history_limit,
            "detail": detail,
            "last_error": last_error,
            "provider_id": provider_id,
            "delay_ms": None if delay is None else int(delay * 1000),
            "dead_cap": keys.MAX_DEAD_LETTERS,
            "member": lease.ref.member,
            "latency_bounds": _LATENCY_BOUNDS,
            "provider_status": error.status if error is not None and error.status else None,
            "deferred": 1 if deferred else None,
            "announce": 1 if self.policy.announces(lease.client, f"message.{state}") else None,
        }
        shard = keys.shard_of(lease.ref)
        reply = self._finish(
            self.redis,
            {
                "message": shard.message(lease.ref.member),
                "history": shard.history(lease.ref.member),
                "dead": shard.dead,
                "stats": shard.stats,
                "inflight": shard.inflight,
                "outbox": shard.outbox,
                "schedule": shard.schedule,
            },
            args,
        )
        if lease.began is not None:
            self.durations.observe(lease.channel, time.monotonic() - lease.began)
        verdict = Transition(text(reply))
        if verdict is Transition.OK and state.terminal:
            delivered = ("delivered",) if state is State.DELIVERED else ()
            self.durations.add(_lane(lease).count("ended", *delivered))
        return verdict

    def note(self, ref: MessageRef, detail: str) -> State | None:
        """Add ``detail`` to the message's history, its state unchanged (a provider's
        receipt after the delivery); the state, or None when there is no record."""
        reply = text(
            self._note(
                self.redis,
                {"message": keys.message(ref), "history": keys.history(ref)},
                {
                    "detail": detail,
                    "ttl": self.policy.ttl,
                    "history_limit": self.policy.history_limit,
                },
            )
        )
        return None if reply == "missing" else State(reply)

    def mark_read(self, ref: MessageRef, read_at_ms: int, detail: str) -> str:
        """Set ``readAt`` once, with ``message.read`` when the client wants it: ok, already
        (a repeated receipt) or missing."""
        reply = self._read(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "outbox": keys.shard_of(ref).outbox,
            },
            {
                "member": ref.member,
                "detail": detail,
                "read_at": read_at_ms,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "readers": self.policy.clients_announcing("message.read"),
            },
        )
        return text(reply)


def _lane(lease: Lease) -> Lane:
    return Lane.of(lease.app, lease.client, lease.priority)


def prepay_operands(prepay: Prepay | None) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The rate keys and the ``channel``, ``app``, ``unrecorded``, ``types`` and ``prepay``
    arguments of a lease (lease_one.lua) that also tries ``prepay``'s rate slot."""
    if prepay is None:
        return (), {"channel": None, "app": None, "unrecorded": None, "types": "", "prepay": []}
    numbers: list[float] = []
    for dimension in zip(
        prepay.intervals_ms, prepay.tolerances_ms, prepay.user_costs, prepay.other_costs,
        strict=True,
    ):  # fmt: skip
        numbers += dimension
    return tuple(prepay.keys), {
        "channel": prepay.channel,
        "app": prepay.app,
        "unrecorded": 1 if prepay.unrecorded else None,
        "types": "," + ",".join(str(t) for t in sorted(prepay.types)) + ",",
        "prepay": numbers,
    }


def lease_verdict(ref: MessageRef, owner: str, reply: list[Any], began: float) -> Lease | StandDown:
    """The grant or the stand-down a lease reply (lease_one.lua) means."""
    verdict = text(reply[0])
    if verdict == "ok":
        return Lease(
            ref,
            owner,
            int(text(reply[1])),
            text(reply[2]),
            prepaid=text(reply[3]) == "1",
            channel=text(reply[4]),
            client=text(reply[5]) or None,
            began=began,
            lease_number=int(text(reply[6])),
            app=text(reply[7]) or None,
            priority=text(reply[8]) or DEFAULT_PRIORITY.value,
            waited=int(text(reply[9])) / 1000 if text(reply[9]) else None,
        )
    if verdict == "terminal":
        return StandDown(ref, StandDownReason.TERMINAL, f"already {text(reply[1])}")
    if verdict == "superseded":
        return StandDown(
            ref, StandDownReason.SUPERSEDED, f"a copy: the live task is {text(reply[1])}"
        )
    if verdict == "early":
        wait = int(text(reply[1])) / 1000
        return StandDown(ref, StandDownReason.EARLY, f"retry due in {wait:.3f} s", wait)
    if verdict == "busy":
        holder, remaining = text(reply[1]), int(text(reply[2]))
        return StandDown(ref, StandDownReason.BUSY, f"held by {holder} for {remaining} ms more")
    return StandDown(ref, StandDownReason.MISSING, "no status record (expired or never accepted)")
