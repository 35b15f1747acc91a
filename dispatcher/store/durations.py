"""Attempt durations per channel: a histogram the workers add to the shared stats hash.

An attempt lasts from its lease to its recorded outcome. Each worker process counts
its attempts in memory; a timer thread adds them to the stats hash of ``keys.counters_shard()``
(``attempt:<channel>:count``, ``:sum_ms``, ``:le:<bound>``) with one pipelined round
trip ``interval`` seconds after the first count it has not added yet, so timing costs
the delivery path no Redis call; shutdown flushes what is left. ``/metrics`` renders them as
``dispatcher_attempt_duration_seconds{channel}`` (dispatcher/api/metrics.py).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping

import redis

from dispatcher import keys
from dispatcher.connections import REDIS_ERRORS

log = logging.getLogger(__name__)

ATTEMPT_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
"""Upper bounds of the attempt-duration histogram, in milliseconds."""
ATTEMPT_PREFIX = "attempt:"
NO_CHANNEL = "-"
"""The ``channel`` label of records older than routing, which do not name theirs."""


class StatsBuffer:
    """Increments of fields of the shared stats hash this process has not added yet."""

    def __init__(self, client: redis.Redis, interval: float = 1.0) -> None:
        self.redis = client
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._timer: threading.Timer | None = None

    def add(self, increments: Mapping[str, int]) -> None:
        """Count ``increments`` (by field); the timer adds them to Redis within ``interval``."""
        with self._lock:
            self._pending.update(increments)
            if self._timer is None:
                self._timer = threading.Timer(self.interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add what was counted to the stats hash now (a lost Redis keeps it for later)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if not pending:
            return
        stats = keys.counters_shard().stats
        pipe = self.redis.pipeline(transaction=False)
        for field, amount in pending.items():
            pipe.hincrby(stats, field, amount)
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("counters not recorded yet, Redis unavailable: %s", exc)
            with self._lock:
                self._pending.update(pending)


def histogram_increments(prefix: str, ms: int, bounds: tuple[int, ...]) -> dict[str, int]:
    """One observation of ``ms`` as stats-hash increments: ``<prefix>count``, ``sum_ms`` and
    each ``le:<bound>`` at or above it (Prometheus buckets are cumulative)."""
    found = {f"{prefix}count": 1, f"{prefix}sum_ms": ms}
    found.update({f"{prefix}le:{bound}": 1 for bound in bounds if ms <= bound})
    return found


class AttemptDurations(StatsBuffer):
    """This process's attempt durations (and other counts) not yet in the stats hash."""

    def observe(self, channel: str, seconds: float) -> None:
        """Count one attempt on ``channel`` that took ``seconds``."""
        ms = max(0, round(seconds * 1000))
        prefix = f"{ATTEMPT_PREFIX}{channel or NO_CHANNEL}:"
        self.add(histogram_increments(prefix, ms, ATTEMPT_BUCKETS_MS))
