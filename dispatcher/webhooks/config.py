"""A client's webhook endpoints as configured, the event types and the retry schedule."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)
"""The Standard Webhooks secret: ``whsec_`` + base64 of this many random bytes."""


class EventType(StrEnum):
    """What a client can subscribe to."""

    DELIVERED = "message.delivered"
    PARTIALLY_DELIVERED = "message.partially_delivered"
    FAILED = "message.failed"
    DEAD = "message.dead"
    READ = "message.read"
    CANCELLED = "message.cancelled"
    RECALLED = "message.recalled"


TERMINAL_EVENTS = {
    "delivered": EventType.DELIVERED,
    "partially_delivered": EventType.PARTIALLY_DELIVERED,
    "failed": EventType.FAILED,
    "dead": EventType.DEAD,
}
"""The event a message's terminal state announces (by state name)."""


def _check_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    if not raw.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(raw.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
    low, high = SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValueError(f"a webhook secret holds {low} to {high} bytes, this one {len(key)}")
    return value


class WebhookEndpoint(BaseModel):
    """One URL a client wants its events at (an entry of the client's ``webhooks``)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s/]+", max_length=2048)
    secret: SecretStr
    previous_secret: SecretStr | None = None
    """While a secret is rotated: requests carry a signature with each (space-separated)."""
    events: list[EventType] = Field(default_factory=lambda: list(TERMINAL_EVENTS.values()))
    description: str | None = Field(default=None, max_length=200)

    _secret = field_validator("secret")(_check_secret)

    @field_validator("previous_secret")
    @classmethod
    def _check_previous(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else _check_secret(value)

    def endpoint_id(self, client: str) -> str:
        """Stable while the client and URL stay: names the endpoint in Redis, logs, metrics."""
        digest = hashlib.sha256(f"{client}\n{self.url}".encode()).hexdigest()
        return f"ep_{digest[:16]}"


class Subscriptions:
    """Which endpoint of which client wants which event, from the clients' configuration."""

    def __init__(self, clients: Mapping[str, Iterable[WebhookEndpoint]]) -> None:
        self.endpoints: dict[str, tuple[str, WebhookEndpoint]] = {}
        self._events: dict[str, set[str]] = {}
        self._targets: dict[tuple[str, str], list[str]] = {}
        for client, endpoints in clients.items():
            for endpoint in endpoints:
                endpoint_id = endpoint.endpoint_id(client)
                self.endpoints[endpoint_id] = (client, endpoint)
                self._events.setdefault(client, set()).update(e.value for e in endpoint.events)
                for event in endpoint.events:
                    targets = self._targets.setdefault((client, event.value), [])
                    if endpoint_id not in targets:
                        targets.append(endpoint_id)

    def wants(self, client: str | None, event: EventType) -> bool:
        """Some endpoint of ``client`` takes ``event`` (what the store scripts are told)."""
        return client is not None and event.value in self._events.get(client, ())

    def clients_wanting(self, event: EventType) -> list[str]:
        return sorted(c for c, events in self._events.items() if event.value in events)

    def targets(self, client: str, event: str) -> list[str]:
        """Ids of the client's endpoints that take ``event``."""
        return self._targets.get((client, event), [])


def parse_schedule(value: str) -> tuple[float, ...]:
    """``0,5,300`` -> delays in seconds before attempt 1, 2, 3 (each after the previous)."""
    try:
        delays = tuple(float(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"a retry schedule is comma-separated seconds, got {value!r}") from None
    if not delays or any(d < 0 for d in delays):
        raise ValueError(f"a retry schedule needs one or more delays >= 0, got {value!r}")
    return delays
