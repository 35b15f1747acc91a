"""The in-flight bound of one API process: past it, a submit is answered 503 at once.

A submit in flight holds its body, a coroutine and, once its turn comes, a
Redis connection. Past ``DISPATCHER_API_MAX_SUBMITS_IN_FLIGHT`` of them in this
process, the next is refused before its body is read: 503 "service busy" with
``Retry-After``, counted in ``/metrics`` as ``reason="busy"``, nothing recorded.
Queuing it instead would only add latency the caller cannot see the end of.
A submit let in has one budget of time for all its Redis calls
(:func:`~dispatcher.redis_budget.redis_budget`), so its wait has a ceiling too.
How the bounds are chosen: docs/operations.md, "Load bounds". A batch submit counts as
as many submits as single bodies its declared size could hold (at least one), so the
bound on the bodies held stays what it was.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from dispatcher.api.envelope import EnvelopeWriter
from dispatcher.api.metrics import ApiMetrics
from dispatcher.api.paths import SUBMIT, SUBMIT_BATCH
from dispatcher.errors import Busy
from dispatcher.limits import MAX_BATCH_REQUEST_BYTES, MAX_REQUEST_BYTES, batch_request_bytes
from dispatcher.redis_budget import redis_budget


class SubmitBound:
    """ASGI middleware counting the submits in flight in this process (one event loop, so a
    plain integer is exact)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        envelope: EnvelopeWriter,
        metrics: ApiMetrics,
        redis_seconds: float | None = None,
        single_bytes: int = MAX_REQUEST_BYTES,
        batch_bytes: int = MAX_BATCH_REQUEST_BYTES,
    ) -> None:
        self.app = app
        self.limit = limit
        self.redis_seconds = redis_seconds
        self.single_bytes = single_bytes
        self.batch_bytes = batch_request_bytes(single_bytes, batch_bytes)
        self.envelope = envelope
        self.metrics = metrics
        self.in_flight = 0
        self.refusal = Busy(f"more than {limit} submits in flight in this process")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if scope["path"] == SUBMIT:
            weight = 1
        elif scope["path"] == SUBMIT_BATCH:
            weight = self._batch_weight(scope)
        else:
            await self.app(scope, receive, send)
            return
        # A batch heavier than the whole bound still goes through alone.
        if self.in_flight >= self.limit or (
            self.in_flight and self.in_flight + weight > self.limit
        ):
            self.metrics.count_submit(503, None, self.refusal)
            await self.envelope.busy()(scope, receive, send)
            return
        self.in_flight += weight
        self.metrics.submits_in_flight.inc(weight)
        try:
            if self.redis_seconds is None:  # no budget: the bound alone
                await self.app(scope, receive, send)
            else:
                with redis_budget(self.redis_seconds):
                    await self.app(scope, receive, send)
        finally:
            self.in_flight -= weight
            self.metrics.submits_in_flight.dec(weight)

    def _batch_weight(self, scope: Scope) -> int:
        """Single-body sizes in a batch's declared Content-Length (the most it may carry
        when it declares none); the body limit refuses it later if it lied."""
        size = self.batch_bytes
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                size = min(int(value), size)
        return max(1, -(-size // self.single_bytes))
