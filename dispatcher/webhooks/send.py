"""One webhook attempt: the signed request on guarded connections, what the answer means.

Signatures come from the ``standardwebhooks`` library (the Standard Webhooks reference
implementation): ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``. Requests
go through urllib3 pools whose connections are opened only to vetted addresses
(:mod:`dispatcher.webhooks.guard`), and no redirect is followed. What an
answer means follows docs/webhooks.md: 2xx delivered; 410 disables the endpoint;
429/502/503/504 are throttling and their ``Retry-After`` is honoured; anything else,
3xx included, is a failure to retry.
"""

from __future__ import annotations

import json
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

import urllib3
from standardwebhooks.webhooks import Webhook
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.util.url import Url, parse_url

from dispatcher.channels.http import ThreadPools
from dispatcher.store.recipients import counts_of
from dispatcher.webhooks.config import WebhookEndpoint
from dispatcher.webhooks.guard import (
    Guard,
    RefusedDestination,
    Resolver,
    guarded_pool_classes,
    resolve,
)
from dispatcher.webhooks.outbox import Event

MAX_BODY_BYTES = 20 * 1024
THROTTLED = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 86400.0
MAX_ANSWER_BYTES = 64 * 1024
"""Of an answer's body, read at most this much (its content is never used; a short body
read to its end keeps the connection alive)."""
_ERROR_TEXT_LIMIT = 500
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
"""Compact UTF-8 JSON, built once (``json.dumps`` with options builds an encoder per call)."""


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
    """``2026-11-29T13:20:00.123Z`` (RFC 3339, UTC, milliseconds)."""
    if millis in (None, ""):
        return None
    seconds, ms = divmod(int(millis), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


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
    """The process's webhook connections, kept alive: small urllib3 pools per sending
    thread (:class:`~dispatcher.channels.http.ThreadPools`), their connections opened
    through the destination guard. One attempt per request: a connection that cannot be
    made is an attempt failed, retried on the webhook schedule."""

    def __init__(
        self,
        *,
        timeout: float,
        allow_loopback: bool,
        resolver: Resolver = resolve,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self._pools = ThreadPools(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=False,
            tls=tls,
            pool_classes=guarded_pool_classes(Guard(allow_loopback, resolver)),
        )

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str | None]:
        """Status and ``Retry-After`` of the answer; raises urllib3's errors and
        RefusedDestination."""
        target = _parsed(url)
        pool = self._pools.get().connection_from_host(
            target.host, port=target.port, scheme=target.scheme
        )
        response = pool.urlopen(
            "POST",
            target.request_uri,
            body=body,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            preload_content=False,
        )
        try:
            if len(response.read(MAX_ANSWER_BYTES + 1, decode_content=False)) > MAX_ANSWER_BYTES:
                response.close()  # not read to its end: the connection is not reused
            return response.status, response.headers.get("retry-after")
        finally:
            response.release_conn()

    def close(self) -> None:
        self._pools.close()


@lru_cache(maxsize=1024)
def _parsed(url: str) -> Url:
    """An endpoint's URL, parsed once (urllib3's pool manager parses it on every call)."""
    return parse_url(url)


def post(http: WebhookHttp, endpoint: WebhookEndpoint, webhook_id: str, body: str) -> Answer:
    """Send one signed request; never raises for the receiver's or the network's faults."""
    try:
        status, retry_after = http.post(
            endpoint.url, body.encode(), signed_headers(endpoint, webhook_id, body)
        )
    except RefusedDestination as exc:
        return Answer(Verdict.FAILED, None, f"refused destination: {exc}")
    except NewConnectionError as exc:  # a subclass of the connect timeout
        reason = exc.__cause__ or exc  # the socket's error, without urllib3's preamble
        return Answer(Verdict.FAILED, None, f"ConnectError: {str(reason)[:200]}")
    except urllib3.exceptions.TimeoutError:  # connect or read
        return Answer(Verdict.FAILED, None, "timed out")
    except HTTPError as exc:
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
