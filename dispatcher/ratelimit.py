"""A rate limiter shared by every worker process, kept in Redis.

GCRA (the "theoretical arrival time" form of a leaky bucket; its one Lua
implementation is in ``dispatcher/store/lua/lib.lua``): each dimension keeps
one timestamp; a request of cost ``n`` advances it by ``n`` emission
intervals. All dimensions are checked and committed in one script, on Redis's
clock, so workers on any number of machines share one budget. A provider
throttle pushes every dimension's time forward (``penalize``), so one 429
slows the whole pool, not only the worker that saw it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from dispatcher import keys
from dispatcher.store.scripts import load


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
    ``other_costs`` otherwise, and with ``app`` only to messages recorded for that
    provider app. When it does not admit, nothing is taken and the channel waits for its
    slot as usual.
    """

    channel: str
    keys: tuple[str, ...]
    intervals_ms: tuple[float, ...]
    tolerances_ms: tuple[float, ...]
    user_costs: tuple[float, ...]
    other_costs: tuple[float, ...]
    types: frozenset[int]
    app: str | None = None
    """Only messages recorded for this provider app (None: any)."""
    unrecorded: bool = False
    """With ``app``: also messages recorded without an app (older records)."""


class SharedRateLimiter:
    """Blocks until every dimension admits the call."""

    def __init__(
        self, client: redis.Redis, dimensions: list[Dimension], *, scope: str | None = None
    ) -> None:
        """``scope``: whose budget this is when one provider has several apps (their
        dimensions have the same names, their states other keys)."""
        self.dimensions = dimensions
        self._keys = [keys.rate_limit(d.name, scope) for d in dimensions]
        self.redis = client
        self._acquire = load("rate_acquire")
        self._penalize = load("rate_penalize")
        self._reserve = load("rate_reserve")
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
        app: str | None = None,
        unrecorded: bool = False,
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
            app=app,
            unrecorded=unrecorded,
        )

    def _dimensions(self, costs: dict[str, float]) -> list[float]:
        dimensions: list[float] = []
        for dimension in self.dimensions:
            dimensions += [
                dimension.interval_ms,
                dimension.tolerance_ms,
                costs.get(dimension.name, 0),
            ]
        return dimensions

    def try_acquire(self, costs: dict[str, float]) -> float:
        """Admit now and return 0, or return seconds to wait (nothing consumed)."""
        dimensions = self._dimensions(costs)
        wait_us = int(self._acquire(self.redis, {"rates": self._keys}, {"dimensions": dimensions}))
        return wait_us / 1_000_000

    def reserve(self, costs: dict[str, float], *, max_wait: float = 60.0) -> float:
        """Take ``costs`` once admitted (waiting, at most ``max_wait``); returns the seconds
        until the end of what was taken, when a call of that many units may go.

        For a call of many units (a multi-recipient send): :meth:`acquire` lets it go at
        once and makes the next caller wait, so one such call right after a busy stretch
        would exceed the provider's window; a reservation makes the call itself wait."""
        dimensions = self._dimensions(costs)
        lag = 0.0

        def try_reserve() -> float:
            nonlocal lag
            wait_us, lag_us = self._reserve(
                self.redis, {"rates": self._keys}, {"dimensions": dimensions}
            )
            lag = int(lag_us) / 1_000_000
            return int(wait_us) / 1_000_000

        self._wait_for(try_reserve, max_wait)
        return lag

    def acquire(self, costs: dict[str, float], *, max_wait: float = 60.0) -> float:
        """Wait until admitted; returns the seconds waited. Raises TimeoutError past max_wait."""
        return self._wait_for(lambda: self.try_acquire(costs), max_wait)

    def _wait_for(self, admit: Callable[[], float], max_wait: float) -> float:
        """Call ``admit`` (0: admitted, else seconds to wait) until it admits, one waiter
        of this process at a time; the seconds waited. Raises TimeoutError past max_wait."""
        started = time.monotonic()
        if not self._turn.acquire(timeout=max_wait):
            raise TimeoutError(f"rate limiter queue took over {max_wait}s")
        try:
            while True:
                wait = admit()
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
        self._penalize(self.redis, {"rates": self._keys}, {"penalty_ms": int(seconds * 1000)})
