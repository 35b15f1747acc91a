"""One webhook attempt: the destination guard, the signed request, what the answer means.

Signatures come from the ``standardwebhooks`` library (the Standard Webhooks reference
implementation): ``v1,<base64 HMAC-SHA256>`` over ``{id}.{timestamp}.{body}``. What an
answer means follows docs/webhooks.md: 2xx delivered; 410 disables the endpoint;
429/502/503/504 are throttling and their ``Retry-After`` is honoured; anything else,
3xx included (redirects are never followed), is a failure to retry.
"""

from __future__ import annotations

import ipaddress
import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from dispatcher.channels.http import PerThreadHttp
from dispatcher.webhooks.config import WebhookEndpoint
from dispatcher.webhooks.outbox import Event

MAX_BODY_BYTES = 20 * 1024
THROTTLED = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER = 86400.0
_ERROR_TEXT_LIMIT = 500

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)
"""Cloud instance-metadata services (AWS, Alibaba Cloud, AWS IPv6, ECS task metadata)."""


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


class RefusedDestination(Exception):
    """The URL resolves to an address webhooks must not reach."""


def check_destination(url: str, *, allow_loopback: bool) -> None:
    """Refuse loopback (unless allowed), private, link-local, metadata and other non-public
    addresses, every address the host resolves to (docs/webhooks.md, "Destinations")."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise RefusedDestination("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]  # a literal needs no resolver
    except ValueError:
        addresses = _resolve(host, port)
    for address in addresses:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address.is_loopback:
            if not allow_loopback:
                raise RefusedDestination(
                    f"{host} resolves to loopback {address} "
                    "(allowed only with DISPATCHER_WEBHOOK_ALLOW_LOOPBACK=true)"
                )
            continue
        if address in METADATA_ADDRESSES or not address.is_global:
            raise RefusedDestination(f"{host} resolves to non-public address {address}")


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedDestination(f"cannot resolve {host}: {exc}") from None
    return [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]


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
    body = {"type": event.type, "timestamp": _iso(event.at_ms), "data": data}
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode()) > MAX_BODY_BYTES:  # only a huge error text can do this
        data["lastError"] = {"code": "truncated", "message": "", "retryable": False}
        text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
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
        Webhook(secret.get_secret_value()).sign(webhook_id, now, body) for secret in secrets
    ]
    return {
        "content-type": "application/json",
        "user-agent": "dispatcher-webhooks/1",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


def post(
    http: PerThreadHttp,
    endpoint: WebhookEndpoint,
    webhook_id: str,
    body: str,
    *,
    allow_loopback: bool,
) -> Answer:
    """Send one signed request; never raises for the receiver's or the network's faults."""
    try:
        check_destination(endpoint.url, allow_loopback=allow_loopback)
    except RefusedDestination as exc:
        return Answer(Verdict.FAILED, None, f"refused destination: {exc}")
    try:
        response = http.post(
            httpx.URL(endpoint.url), body.encode(), signed_headers(endpoint, webhook_id, body)
        )
    except httpx.TimeoutException:
        return Answer(Verdict.FAILED, None, "timed out")
    except httpx.HTTPError as exc:
        return Answer(Verdict.FAILED, None, f"{type(exc).__name__}: {str(exc)[:200]}")
    status = response.status_code
    if 200 <= status < 300:
        return Answer(Verdict.DELIVERED, status)
    if status == 410:
        return Answer(Verdict.GONE, status, "410 Gone")
    error = f"HTTP {status}"
    if 300 <= status < 400:
        error += " (redirects are not followed)"
    retry_after = retry_after_seconds(response.headers.get("retry-after"))
    return Answer(Verdict.FAILED, status, error, retry_after if status in THROTTLED else None)


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
