"""Withdraw stage: take a message back, before it is sent (cancel) or after (recall).

``lua/cancel.lua`` moves a ``scheduled``, ``queued`` or ``retrying`` message to the
terminal ``cancelled``; ``lua/recalled.lua`` records that a delivered message was
recalled from its recipients. Both are atomic against the lease and finish scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.ids import MessageRef
from dispatcher.record import State
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load


class CancelOutcome(StrEnum):
    """``CANCELLED``: it will not be sent; ``IN_FLIGHT``: an attempt holds the lease and
    finishes (its outcome is the message's); ``ALREADY_DONE``: terminal already (see
    the state); ``NOT_FOUND``: no record (never accepted, or expired)."""

    CANCELLED = "cancelled"
    IN_FLIGHT = "in_flight"
    ALREADY_DONE = "already_done"
    NOT_FOUND = "not_found"


@dataclass(frozen=True, slots=True)
class CancelResult:
    outcome: CancelOutcome
    state: State | None
    """The state now (``cancelled`` once cancelled; None when not found)."""
    was: State | None = None
    """The state a cancelled message left."""

    @classmethod
    def from_reply(cls, reply: str) -> CancelResult:
        verdict, _, state = reply.partition(":")
        if verdict == "cancelled":
            return cls(CancelOutcome.CANCELLED, State.CANCELLED, State(state))
        if verdict == "processing":
            return cls(CancelOutcome.IN_FLIGHT, State.PROCESSING)
        if verdict == "terminal":
            return cls(CancelOutcome.ALREADY_DONE, State(state))
        return cls(CancelOutcome.NOT_FOUND, None)


class WithdrawStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._cancel = load("cancel")
        self._recalled = load("recalled")

    def cancel(self, ref: MessageRef, detail: str) -> CancelResult:
        """Cancel ``ref`` unless it is being sent or done; ``detail`` goes to its history."""
        reply = self._cancel(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "inflight": keys.shard_of(ref).inflight,
                "schedule": keys.shard_of(ref).schedule,
                "stats": keys.shard_of(ref).stats,
                "outbox": keys.shard_of(ref).outbox,
            },
            {
                "member": ref.member,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "detail": detail,
                "announced": self.policy.clients_announcing("message.cancelled"),
            },
        )
        return CancelResult.from_reply(text(reply))

    def recalled(self, ref: MessageRef, detail: str) -> str:
        """``delivered`` -> ``recalled``: ``ok``, ``missing``, or the state it is in instead."""
        reply = self._recalled(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "stats": keys.shard_of(ref).stats,
                "outbox": keys.shard_of(ref).outbox,
            },
            {
                "member": ref.member,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "detail": detail,
                "announced": self.policy.clients_announcing("message.recalled"),
            },
        )
        return text(reply)
