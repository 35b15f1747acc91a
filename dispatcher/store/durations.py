"""Attempt durations per channel: a histogram the workers add to the shared stats hash.

An attempt lasts from its lease to its recorded outcome. Each worker process counts
its attempts in memory; a timer thread adds them to ``keys.STATS``
(``attempt:<channel>:count``, ``:sum_ms``, ``:le:<bound>``) with one pipelined round
trip ``interval`` seconds after the first count it has not added yet, so timing costs
the delivery path no Redis call; shutdown flushes what is left. ``/metrics`` renders them as
``dispatcher_attempt_duration_seconds{channel}`` (dispatcher/api/metrics.py).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left

import redis

from dispatcher import keys
from dispatcher.connections import REDIS_ERRORS

log = logging.getLogger(__name__)

ATTEMPT_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
"""Upper bounds of the attempt-duration histogram, in milliseconds."""
ATTEMPT_PREFIX = "attempt:"
NO_CHANNEL = "-"
"""The ``channel`` label of records older than routing, which do not name theirs."""


class AttemptDurations:
    """This process's attempt durations not yet added to the shared stats hash."""

    def __init__(self, client: redis.Redis, interval: float = 1.0) -> None:
        self.redis = client
        self.interval = interval
        self._lock = threading.Lock()
        self._pending: dict[str, list[int]] = {}
        """Per channel: count, sum in ms, then how many fell in each bucket (not cumulative)."""
        self._timer: threading.Timer | None = None

    def observe(self, channel: str, seconds: float) -> None:
        """Count one attempt on ``channel`` that took ``seconds``."""
        ms = max(0, round(seconds * 1000))
        bucket = bisect_left(ATTEMPT_BUCKETS_MS, ms)
        with self._lock:
            row = self._pending.get(channel)
            if row is None:
                row = self._pending[channel] = [0] * (3 + len(ATTEMPT_BUCKETS_MS))
            row[0] += 1
            row[1] += ms
            row[2 + bucket] += 1
            if self._timer is None:
                self._timer = threading.Timer(self.interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Add what was counted to the stats hash now (a lost Redis keeps it for later)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            timer, self._timer = self._timer, None
        if timer is not None and timer is not threading.current_thread():
            timer.cancel()
        if not pending:
            return
        pipe = self.redis.pipeline(transaction=False)
        for channel, row in pending.items():
            prefix = f"{ATTEMPT_PREFIX}{channel or NO_CHANNEL}:"
            pipe.hincrby(keys.STATS, prefix + "count", row[0])
            pipe.hincrby(keys.STATS, prefix + "sum_ms", row[1])
            below = 0
            for bound, count in zip(ATTEMPT_BUCKETS_MS, row[2:], strict=False):
                below += count  # Prometheus buckets count every observation <= the bound
                if below:
                    pipe.hincrby(keys.STATS, f"{prefix}le:{bound}", below)
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("attempt durations not recorded yet, Redis unavailable: %s", exc)
            with self._lock:
                for channel, row in pending.items():
                    kept = self._pending.setdefault(channel, [0] * len(row))
                    kept[:] = [a + b for a, b in zip(kept, row, strict=True)]
