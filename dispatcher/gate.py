"""The gate an HTTP submit passes: its (client, nonce) replay guard and its client's submit rate.

The gate is checked inside the script that records the message
(``dispatcher/store/lua/create.lua``), so a submit costs one Redis round trip
for everything, and a refused submit keeps nothing: a request refused for its
rate gives its nonce back, so the caller may retry the very same bytes after
Retry-After.

The rate is the same GCRA as :class:`dispatcher.ratelimit.SharedRateLimiter`
(the key from :func:`dispatcher.keys.rate_limit`, the interval/tolerance
arithmetic of :class:`~dispatcher.ratelimit.Dimension`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher import keys
from dispatcher.ratelimit import Dimension

ANONYMOUS = "-"
"""Rate-limit bucket of requests that name no client (possible only with auth off)."""

REPLAYED = "replayed request: this nonce was already used within the signature window"


def submit_bucket(client: str) -> str:
    """The rate-limit dimension name of one client's submits."""
    return f"submit:{client}"


@dataclass(frozen=True, slots=True)
class Gate:
    """What one submit must pass: ``client``'s rate (if limited) and its nonce's guard (if any)."""

    client: str
    interval_ms: float
    """Milliseconds between submits at the steady rate; 0 means no rate limit."""
    tolerance_ms: float
    guard: str | None = None
    guard_ttl_ms: int = 0

    @classmethod
    def for_client(
        cls,
        client: str | None,
        *,
        rate_per_second: float,
        burst: int,
        guard: str | None = None,
        guard_ttl_ms: int = 0,
    ) -> Gate:
        name = client or ANONYMOUS
        if rate_per_second <= 0:
            return cls(name, 0, 0, guard, guard_ttl_ms)
        dimension = Dimension(submit_bucket(name), limit=rate_per_second, period=1.0, burst=burst)
        return cls(name, dimension.interval_ms, dimension.tolerance_ms, guard, guard_ttl_ms)

    @property
    def rate_key(self) -> str | None:
        """The client's submit rate state, or None when its submits are not limited."""
        return keys.rate_limit(submit_bucket(self.client)) if self.interval_ms > 0 else None
