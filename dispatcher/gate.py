"""The gate an HTTP submit passes: its (client, nonce) replay guard and its client's submit rate.

The gate is checked inside the script that records the message
(:meth:`dispatcher.status.StatusStore.create`), so a submit costs one Redis
round trip for everything, and a refused submit keeps nothing: a request
refused for its rate gives its nonce back, so the caller may retry the very
same bytes after Retry-After.

The rate is the same GCRA as :class:`dispatcher.ratelimit.SharedRateLimiter`
(the key from :func:`dispatcher.keys.rate_limit`, the interval/tolerance
arithmetic of :class:`~dispatcher.ratelimit.Dimension`).
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher import keys
from dispatcher.ratelimit import Dimension

# A Lua function for the scripts that record a submit. Arguments: rate key, guard key or
# nil, interval ms (0: no rate limit), tolerance ms, guard ttl ms. Returns nil when the
# submit may pass (guard and one rate unit taken), 'replayed', or 'wait:<ms>' (nothing kept).
GATE_LUA = """
local function pass_gate(rate_key, guard, interval, tolerance, guard_ttl)
  if guard and not redis.call('SET', guard, '1', 'NX', 'PX', guard_ttl) then
    return 'replayed'
  end
  if interval <= 0 then return nil end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local tat = tonumber(redis.call('GET', rate_key) or '0')
  if tat < now then tat = now end
  -- Never further ahead than this rate allows (repairs state left by a slower rate).
  if tat > now + tolerance + interval then tat = now + tolerance + interval end
  local allow_at = tat - tolerance
  if allow_at > now then
    if guard then redis.call('DEL', guard) end
    return 'wait:' .. math.ceil(allow_at - now)
  end
  local new_tat = tat + interval
  redis.call('SET', rate_key, tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  return nil
end
"""

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
    def keys(self) -> list[str]:
        """The rate key, then the guard key when there is one."""
        rate_key = keys.rate_limit(submit_bucket(self.client))
        return [rate_key, self.guard] if self.guard else [rate_key]

    @property
    def args(self) -> list[float | int]:
        return [self.interval_ms, self.tolerance_ms, self.guard_ttl_ms]
