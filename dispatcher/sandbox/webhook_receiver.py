"""A webhook receiver as a client would write one: every request verified with the
``standardwebhooks`` library, the verified events kept for the tour and the tests.

``POST /webhooks`` (any path below it too) answers 204 to a valid signature and 400
otherwise; ``GET /_sandbox/webhooks`` lists what arrived (``verified`` and ``rejected``).
The ledger and fault rules of every simulator apply, so a test can make it answer 503,
410 or drop connections.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import FastAPI, Request
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.sandbox.skeleton import Simulator, record_traffic, simulator_app


class Received:
    """What the receiver took in, safe to read from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.verified: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []

    def add(self, entry: dict[str, Any], *, ok: bool) -> None:
        with self._lock:
            (self.verified if ok else self.rejected).append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"verified": list(self.verified), "rejected": list(self.rejected)}

    def clear(self) -> None:
        with self._lock:
            self.verified.clear()
            self.rejected.clear()


def create_webhook_receiver(secrets: list[str]) -> FastAPI:
    """The receiver accepting a signature made with any of ``secrets`` (``whsec_...``)."""
    verifiers = [Webhook(secret) for secret in secrets]
    received = Received()

    def routing_error(request: Request, exc: StarletteHTTPException) -> Response:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    api = simulator_app(
        "Webhook receiver (sandbox)", version="1", errors={}, routing_error=routing_error
    )

    @api.post("/webhooks")
    @api.post("/webhooks/{rest:path}")
    async def receive(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", "replace")
        headers = dict(request.headers)
        entry: dict[str, Any] = {
            "path": request.url.path,
            "webhookId": headers.get("webhook-id"),
            "timestamp": headers.get("webhook-timestamp"),
            "signature": headers.get("webhook-signature"),
            "receivedAt": time.time(),
        }
        for verifier in verifiers:
            try:
                entry["payload"] = verifier.verify(body, headers)
            except WebhookVerificationError:
                continue
            received.add(entry, ok=True)
            return Response(status_code=204)
        entry["body"] = body[:2000]
        received.add(entry, ok=False)
        return JSONResponse({"error": "signature not valid"}, status_code=400)

    @api.get("/_sandbox/webhooks")
    async def listing() -> dict[str, Any]:
        return received.snapshot()

    @api.delete("/_sandbox/webhooks", status_code=204)
    async def clear() -> None:
        received.clear()

    api.state.received = received
    record_traffic(api)
    return api


def create_webhook_receiver_from_settings(settings: Settings) -> FastAPI:
    secrets = [
        endpoint.secret.get_secret_value()
        for client in settings.clients.values()
        for endpoint in client.webhooks
    ]
    if not secrets:
        raise ConfigurationError("the webhook receiver needs a client with a webhook endpoint")
    return create_webhook_receiver(secrets)


SIMULATOR = Simulator(
    "Webhook receiver", 9104, create_webhook_receiver_from_settings, optional=True
)
