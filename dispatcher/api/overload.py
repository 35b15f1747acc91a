"""The in-flight bound of one API process: past it, a submit is answered 503 at once.

A submit in flight holds its body, a coroutine and, once its turn comes, a
Redis connection. Past ``DISPATCHER_API_MAX_SUBMITS_IN_FLIGHT`` of them in this
process, the next is refused before its body is read: 503 "service busy" with
``Retry-After``, counted in ``/metrics`` as ``reason="busy"``, nothing recorded.
Queuing it instead would only add latency the caller cannot see the end of.
How the bound is chosen: docs/operations.md, "Load bounds".
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from dispatcher.api.envelope import EnvelopeWriter
from dispatcher.api.metrics import ApiMetrics
from dispatcher.api.paths import SUBMIT
from dispatcher.errors import Busy


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
    ) -> None:
        self.app = app
        self.limit = limit
        self.envelope = envelope
        self.metrics = metrics
        self.in_flight = 0
        self.refusal = Busy(f"more than {limit} submits in flight in this process")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != SUBMIT or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.metrics.count_submit(503, None, self.refusal)
            await self.envelope.busy()(scope, receive, send)
            return
        self.in_flight += 1
        self.metrics.submits_in_flight.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.submits_in_flight.dec()
