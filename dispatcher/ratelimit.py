"""A rate limiter shared by every worker process, kept in Redis.

GCRA (the "theoretical arrival time" form of a leaky bucket): each dimension
keeps one timestamp; a request of cost ``n`` advances it by ``n`` emission
intervals. All dimensions are checked and committed in one script, on Redis's
clock, so workers on any number of machines share one budget. A provider
throttle pushes every dimension's time forward (``penalize``), so one 429
slows the whole pool, not only the worker that saw it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis

from dispatcher import keys

# A Lua function for every script that takes a slot: admit a call costing costs[i] on each
# dimension i (keys[i], intervals[i] ms, tolerances[i] ms). Returns 0 when admitted (all
# dimensions committed), else microseconds to wait (whole milliseconds, rounded up, made
# every caller ~0.5 ms late for each ~10 ms slot), with nothing committed.
GCRA_LUA = """
local function gcra_try(keys, intervals, tolerances, costs)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
  local wait = 0
  local new_tats = {}
  for i, key in ipairs(keys) do
    if costs[i] > 0 then
      local tat = tonumber(redis.call('GET', key) or '0')
      if tat < now then tat = now end
      local allow_at = tat - tolerances[i]
      if allow_at > now and allow_at - now > wait then wait = allow_at - now end
      new_tats[i] = tat + intervals[i] * costs[i]
    end
  end
  if wait > 0 then return math.ceil(wait * 1000) end
  for i, key in ipairs(keys) do
    if new_tats[i] then
      redis.call('SET', key, tostring(new_tats[i]), 'PX', math.ceil(new_tats[i] - now) + 1000)
    end
  end
  return 0
end
"""

# KEYS: one per dimension. ARGV: per dimension (interval ms, tolerance ms, cost).
_ACQUIRE = (
    GCRA_LUA
    + """
local intervals, tolerances, costs = {}, {}, {}
for i = 1, #KEYS do
  intervals[i] = tonumber(ARGV[3 * i - 2])
  tolerances[i] = tonumber(ARGV[3 * i - 1])
  costs[i] = tonumber(ARGV[3 * i])
end
return gcra_try(KEYS, intervals, tolerances, costs)
"""
)

# KEYS: dimensions. ARGV: penalty ms. Nobody is admitted before now + penalty.
_PENALIZE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local until_ = now + tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < until_ then
    redis.call('SET', key, tostring(until_), 'PX', math.ceil(until_ - now) + 1000)
  end
end
return 1
"""


@dataclass(frozen=True)
class Dimension:
    """One budget: ``limit`` units per ``period`` seconds, with a burst of ``burst`` units."""

    name: str
    limit: float
    period: float
    burst: float = 1.0

    @property
    def interval_ms(self) -> float:
        return self.period * 1000 / self.limit

    @property
    def tolerance_ms(self) -> float:
        return self.interval_ms * max(self.burst - 1, 0)


@dataclass(frozen=True)
class Prepay:
    """A first try at a channel's rate slot, made by the script that leases the message.

    It saves the delivery one Redis round trip. It applies only to messages of
    ``channel`` whose type is in ``types`` (costs known before the send: no media to
    resolve first), at ``user_costs`` per dimension for messages to users and
    ``other_costs`` otherwise. When it does not admit, nothing is taken and the
    channel waits for its slot as usual.
    """

    channel: str
    keys: tuple[str, ...]
    intervals_ms: tuple[float, ...]
    tolerances_ms: tuple[float, ...]
    user_costs: tuple[float, ...]
    other_costs: tuple[float, ...]
    types: frozenset[int]


class SharedRateLimiter:
    """Blocks until every dimension admits the call."""

    def __init__(self, client: redis.Redis, dimensions: list[Dimension]) -> None:
        self.dimensions = dimensions
        self._keys = [keys.rate_limit(d.name) for d in dimensions]
        self._acquire = client.register_script(_ACQUIRE)
        self._penalize = client.register_script(_PENALIZE)
        # One waiter per process asks Redis at a time; the others queue here. Without it
        # every thread of every worker polled at each slot (32 threads x 4 processes asked
        # ~100 times per admitted call), and the CPU that burned delayed the sends enough
        # to bunch them past the provider's limit.
        self._turn = threading.Lock()

    def prepay(
        self,
        channel: str,
        *,
        user_costs: dict[str, float],
        other_costs: dict[str, float],
        types: frozenset[int],
    ) -> Prepay:
        """The :class:`Prepay` of this limiter for ``channel`` (costs by dimension name)."""
        return Prepay(
            channel=channel,
            keys=tuple(self._keys),
            intervals_ms=tuple(d.interval_ms for d in self.dimensions),
            tolerances_ms=tuple(d.tolerance_ms for d in self.dimensions),
            user_costs=tuple(user_costs.get(d.name, 0.0) for d in self.dimensions),
            other_costs=tuple(other_costs.get(d.name, 0.0) for d in self.dimensions),
            types=types,
        )

    def try_acquire(self, costs: dict[str, float]) -> float:
        """Admit now and return 0, or return seconds to wait (nothing consumed)."""
        args: list[float] = []
        for dimension in self.dimensions:
            args += [dimension.interval_ms, dimension.tolerance_ms, costs.get(dimension.name, 0)]
        wait_us = int(self._acquire(keys=self._keys, args=args))
        return wait_us / 1_000_000

    def acquire(self, costs: dict[str, float], *, max_wait: float = 60.0) -> float:
        """Wait until admitted; returns the seconds waited. Raises TimeoutError past max_wait."""
        started = time.monotonic()
        if not self._turn.acquire(timeout=max_wait):
            raise TimeoutError(f"rate limiter queue took over {max_wait}s")
        try:
            while True:
                wait = self.try_acquire(costs)
                if wait <= 0:
                    return time.monotonic() - started
                if time.monotonic() - started + wait > max_wait:
                    raise TimeoutError(
                        f"rate limiter would wait {wait:.1f}s more, over {max_wait}s"
                    )
                time.sleep(wait)
        finally:
            self._turn.release()

    def penalize(self, seconds: float) -> None:
        """Hold every caller back for ``seconds`` (the provider told us to slow down)."""
        self._penalize(keys=self._keys, args=[int(seconds * 1000)])
