"""Admission of a submit: the replay guard and the client's rate limit in one Redis call.

The rate limit is the same GCRA as :class:`dispatcher.ratelimit.SharedRateLimiter`
(same key, :func:`dispatcher.keys.rate_limit`, same stored state, same
interval/tolerance arithmetic from :class:`~dispatcher.ratelimit.Dimension`),
written here together with the replay guard so a submit spends one round trip
on both, and so a request refused for its rate gives its sign back (the
caller may retry the very same bytes after Retry-After).
"""

from __future__ import annotations

import contextlib

import redis

from dispatcher import keys
from dispatcher.api.auth import Caller
from dispatcher.connections import REDIS_ERRORS
from dispatcher.errors import RateLimited, Unauthorized, Unavailable
from dispatcher.ratelimit import Dimension

# KEYS: rate key [, guard key]. ARGV: interval ms, tolerance ms, guard ttl ms.
# Returns 0 when admitted, -1 for a replayed sign, else ms to wait (nothing consumed).
_ADMIT = """
local guard = KEYS[2]
if guard and not redis.call('SET', guard, '1', 'NX', 'PX', ARGV[3]) then return -1 end
local interval = tonumber(ARGV[1])
if interval <= 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
-- Never further ahead than this rate allows (repairs state left by a slower rate).
if tat > now + tolerance + interval then tat = now + tolerance + interval end
local allow_at = tat - tolerance
if allow_at > now then
  if guard then redis.call('DEL', guard) end
  return math.ceil(allow_at - now)
end
local new_tat = tat + interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
return 0
"""

ANONYMOUS = "-"
"""Rate-limit bucket of requests that name no client (possible only with auth off)."""

REPLAYED = "replayed request: this sign was already used within the signature window"


def submit_bucket(client: str) -> str:
    """The rate-limit dimension name of one client's submits."""
    return f"submit:{client}"


def submit_dimension(client: str, rate_per_second: float, burst: int) -> Dimension:
    return Dimension(submit_bucket(client), limit=rate_per_second, period=1.0, burst=burst)


class Admission:
    """Claims replay guards and spends the per-client submit budget."""

    def __init__(self, client: redis.Redis, *, rate_per_second: float, burst: int) -> None:
        self.redis = client
        self.rate_per_second = rate_per_second
        self.burst = burst
        if rate_per_second > 0:
            probe = submit_dimension(ANONYMOUS, rate_per_second, burst)
            self._args = [probe.interval_ms, probe.tolerance_ms]
        else:
            self._args = [0, 0]  # no limit
        self._admit = client.register_script(_ADMIT)

    def admit(self, caller: Caller) -> None:
        """Claim the caller's sign and one unit of its budget, or raise (nothing kept).

        Raises Unauthorized (replay), RateLimited (Retry-After in ``retry_after``)
        or Unavailable (Redis down).
        """
        name = caller.client or ANONYMOUS
        rate_key = keys.rate_limit(submit_bucket(name))
        key_list = [rate_key, caller.guard] if caller.guard else [rate_key]
        try:
            result = int(self._admit(keys=key_list, args=[*self._args, caller.guard_ttl_ms]))
        except REDIS_ERRORS as exc:
            raise Unavailable(f"rate limiter unavailable: {exc}") from None
        if result == -1:
            raise Unauthorized(REPLAYED)
        if result > 0:
            raise RateLimited(name, result / 1000)

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

    def release(self, caller: Caller) -> None:
        """Give a sign back after a failure that accepted nothing (best effort)."""
        if not caller.guard:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            self.redis.delete(caller.guard)
