"""Admission of API requests: a submit's gate, and the replay guard of the other calls.

A submit's replay guard and its client's rate limit are checked by the script
that records the message (:mod:`dispatcher.gate`): one round trip for all.
Reads (status lookups, operator calls) are not rate limited; they only claim
their nonce's guard. A plain client's replay of its dead letters sends them
again, so it is charged to the client's submit rate (:meth:`Admission.charge`).
"""

from __future__ import annotations

import asyncio
import contextlib

import redis

from dispatcher.api.auth import Caller
from dispatcher.connections import REDIS_ERRORS
from dispatcher.errors import (
    Busy,
    FieldError,
    InvalidMessage,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from dispatcher.gate import REPLAYED, Gate, submit_bucket
from dispatcher.ratelimit import Dimension, SharedRateLimiter


class Admission:
    """Builds submit gates and claims or gives back the replay guard of a request."""

    def __init__(self, client: redis.Redis, *, rate_per_second: float, burst: int) -> None:
        self.redis = client
        self.rate_per_second = rate_per_second
        self.burst = burst

    def gate(self, caller: Caller) -> Gate:
        """What a submit by ``caller`` must pass: its client's rate and its nonce's guard."""
        return Gate.for_client(
            caller.client,
            rate_per_second=self.rate_per_second,
            burst=self.burst,
            guard=caller.guard,
            guard_ttl_ms=caller.guard_ttl_ms,
        )

    def claim(self, caller: Caller) -> None:
        """Claim the replay guard only (reads are not rate limited)."""
        if not caller.guard:
            return
        try:
            fresh = self.redis.set(caller.guard, b"1", nx=True, px=caller.guard_ttl_ms)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"replay guard unavailable: {exc}") from None
        if not fresh:
            raise Unauthorized(REPLAYED)

    def charge(self, caller: Caller, messages: int) -> None:
        """Take ``messages`` submits of the caller's rate at once: RateLimited when its
        budget has not that many now, InvalidMessage when its burst never will."""
        if self.rate_per_second <= 0 or messages <= 0:
            return
        client = caller.client or "-"
        if messages > self.burst:
            error = f"at most {self.burst} messages at once (the client's submit burst)"
            raise InvalidMessage([FieldError("getMessageIds", error)])
        budget = Dimension(
            submit_bucket(client), limit=self.rate_per_second, period=1.0, burst=self.burst
        )
        try:
            wait = SharedRateLimiter(self.redis, [budget]).try_acquire({budget.name: messages})
        except REDIS_ERRORS as exc:
            raise Unavailable(f"rate limiter unavailable: {exc}") from None
        if wait > 0:
            raise RateLimited(client, wait)

    async def give_back(self, caller: Caller, refusal: Unavailable) -> None:
        """After a refused submit, release its nonce so the same bytes may be sent again; not
        after :class:`Busy`, which came before the nonce was claimed. The release runs in
        the background, outside the request's Redis budget: the answer does not wait for it
        (Redis is perhaps stalled) and the budget, perhaps spent, does not cut it short."""
        if not isinstance(refusal, Busy) and caller.guard:
            # run_in_executor, unlike to_thread, does not carry the request's budget over.
            asyncio.get_running_loop().run_in_executor(None, self.release, caller)

    def release(self, caller: Caller) -> None:
        """Give a nonce back after a failure that accepted nothing (best effort)."""
        if not caller.guard:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.delete(caller.guard)
