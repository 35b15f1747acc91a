"""One webhook attempt: the signed request on guarded connections, what the answer means.

Signatures come from the ``standardwebhooks`` library (the Standard Webhooks reference
implementation): ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``. Requests
go through an httpcore connection pool whose connections are opened only to vetted
addresses (:mod:`dispatcher.webhooks.guard`); httpcore never follows a redirect. What an
answer means follows docs/webhooks.md: 2xx delivered; 410 disables the endpoint;
429/502/503/504 are throttling and their ``Retry-After`` is honoured; anything else,
3xx included, is a failure to retry.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

import httpcore
import httpx
from standardwebhooks.webhooks import Webhook

from dispatcher.store.recipients import counts_of
from dispatcher.webhooks.config import WebhookEndpoint
from dispatcher.webhooks.guard import GuardedBackend, RefusedDestination
from dispatcher.webhooks.outbox import Event

MAX_BODY_BYTES = 20 * 1024
THROTTLED = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 86400.0
MAX_ANSWER_BYTES = 64 * 1024
"""Of an answer's body, read at most this much (its content is never used; a short body
read to its end keeps the connection alive)."""
KEEPALIVE_SECONDS = 60.0
"""An idle connection is closed after this long."""
_ERROR_TEXT_LIMIT = 500
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Compact UTF-8 JSON, built once (``json.dumps`` with options builds an encoder per call)."""
_FAULTS = (
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
)


class Verdict(StrEnum):
    DELIVERED = "delivered"
    FAILED = "failed"
    GONE = "gone"
    """410: the receiver says the endpoint no longer exists."""


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int | None
    error: str = ""
    retry_after: float | None = None


def build_body(event: Event, message_id: str) -> str:
    """``{type, timestamp, data}``: the record's public fields at the event, never secrets."""
    snapshot = event.snapshot
    data: dict[str, Any] = {"getMessageId": message_id, "state": snapshot.get("state")}
    data["attempts"] = int(snapshot.get("attempts") or 0)
    data["channel"] = snapshot.get("channel")
    data["providerMessageId"] = snapshot.get("providerMessageId")
    data["lastError"] = _last_error(snapshot.get("lastError"))
    for name in ("deliveredAt", "readAt"):
        data[name] = _iso(snapshot.get(name))
    counts = counts_of(
        snapshot.get("recipients"),
        snapshot.get("recipientsDelivered"),
        snapshot.get("recipientsFailed"),
    )
    if counts is not None:  # a multi-recipient message (docs/webhooks.md)
        data["recipients"] = counts.public()
    body = {"type": event.type, "timestamp": _iso(event.at_ms), "data": data}
    text = _JSON.encode(body)
    if len(text.encode()) > MAX_BODY_BYTES:  # only a huge error text can do this
        data["lastError"] = {"code": "truncated", "message": "", "retryable": False}
        text = _JSON.encode(body)
    return text


def _last_error(raw: Any) -> Any:
    if not raw:
        return None
    try:
        error = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        error["message"] = error["message"][:_ERROR_TEXT_LIMIT]
    return error


def _iso(millis: Any) -> str | None:
    if millis in (None, ""):
        return None
    moment = datetime.fromtimestamp(int(millis) / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def signed_headers(endpoint: WebhookEndpoint, webhook_id: str, body: str) -> dict[str, str]:
    now = datetime.now(tz=UTC)
    secrets = [endpoint.secret] + ([endpoint.previous_secret] if endpoint.previous_secret else [])
    signatures = [
        _signer(secret.get_secret_value()).sign(webhook_id, now, body) for secret in secrets
    ]
    return {
        "content-type": "application/json",
        "user-agent": "dispatcher-webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


@lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    """The signer of one secret, built once (building decodes the secret)."""
    return Webhook(secret)


class WebhookHttp:
    """The process's webhook connections, kept alive: a small httpcore pool per sending
    thread, its connections opened by :class:`GuardedBackend` (or ``backend``, in tests).

    Not one pool shared by every thread: httpcore scans each connection of a pool on
    every request, so with many threads on one pool that scan cost more CPU than the
    request itself (docs/webhooks.md, "Cost")."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_loopback: bool,
        connections: int = 4,
        backend: httpcore.NetworkBackend | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        self.connections = connections
        """Per thread: the endpoints a thread keeps a connection to at once."""
        # One TLS context and one backend for every thread's pool: building a context
        # loads the CA bundle.
        self._tls = tls or httpx.create_ssl_context()
        self._backend = backend or GuardedBackend(allow_loopback=allow_loopback)
        self._local = threading.local()
        self._pools: list[httpcore.ConnectionPool] = []
        self._lock = threading.Lock()

    @property
    def pool(self) -> httpcore.ConnectionPool:
        """This thread's pool."""
        pool: httpcore.ConnectionPool | None = getattr(self._local, "pool", None)
        if pool is None:
            pool = httpcore.ConnectionPool(
                ssl_context=self._tls,
                max_connections=self.connections,
                max_keepalive_connections=self.connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
                network_backend=self._backend,
            )
            self._local.pool = pool
            with self._lock:
                self._pools.append(pool)
        return pool

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        """Status and ``Retry-After`` of the answer; raises httpcore's errors and
        RefusedDestination."""
        with self.pool.stream(
            "POST",
            url,
            headers=list(headers.items()),
            content=body,
            extensions={"timeout": self.timeout},
        ) as response:
            read = 0
            for chunk in response.iter_stream():
                read += len(chunk)
                if read > MAX_ANSWER_BYTES:
                    break
            retry_after = next(
                (v.decode("latin-1") for k, v in response.headers if k.lower() == b"retry-after"),
                None,
            )
            return response.status, retry_after

    def close(self) -> None:
        with self._lock:
            pools, self._pools = self._pools, []
        for pool in pools:
            pool.close()


def post(http: WebhookHttp, endpoint: WebhookEndpoint, webhook_id: str, body: str) -> Answer:
    """Send one signed request; never raises for the receiver's or the network's faults."""
    try:
        status, retry_after = http.post(
            endpoint.url, body.encode(), signed_headers(endpoint, webhook_id, body)
        )
    except RefusedDestination as exc:
        return Answer(Verdict.FAILED, None, f"refused destination: {exc}")
    except httpcore.TimeoutException:
        return Answer(Verdict.FAILED, None, "timed out")
    except _FAULTS as exc:
        return Answer(Verdict.FAILED, None, f"{type(exc).__name__}: {str(exc)[:200]}")
    if 200 <= status < 300:
        return Answer(Verdict.DELIVERED, status)
    if status == 410:
        return Answer(Verdict.GONE, status, "410 Gone")
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += " (redirects are not followed)"
    wait = retry_after_seconds(retry_after) if status in THROTTLED else None
    return Answer(Verdict.FAILED, status, error, wait)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(tz=UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
