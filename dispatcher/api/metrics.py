"""Prometheus metrics of the API: its own counters plus the fleet's, read from Redis.

Each app has its own :class:`CollectorRegistry` (no global state, so tests and
several apps in one process do not collide). The workers' figures (transitions,
delivery latency) live in the shared Redis hash ``keys.STATS``; a custom
collector reads them, with the queue depth, at scrape time, in one round trip
when the broker is the same Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from dispatcher import keys
from dispatcher.connections import REDIS_ERRORS, text
from dispatcher.store import LATENCY_BUCKETS_MS

log = logging.getLogger(__name__)

REJECT_REASONS: dict[int, str] = {
    400: "invalid",
    401: "unauthorized",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}
"""``reason`` label of ``dispatcher_rejected_total`` by answer code."""

TRANSITIONS = {
    "delivered": ("dispatcher_delivered", "Messages delivered to the provider."),
    "failed": ("dispatcher_failed", "Messages failed permanently."),
    "dead": ("dispatcher_dead", "Messages that used up their retries (dead letters)."),
    "retrying": ("dispatcher_retries", "Delivery attempts that will be retried."),
}
"""Counters read from ``state:<state>`` in the shared stats hash."""


class ApiMetrics:
    """The API's counters and the registry ``/metrics`` renders."""

    def __init__(self, store: redis.Redis, broker: redis.Redis | None, queue: str) -> None:
        self.registry = CollectorRegistry()
        self.submitted = Counter(
            "dispatcher_submitted",
            "Submit requests received by this API process.",
            registry=self.registry,
        )
        self.accepted = Counter(
            "dispatcher_accepted",
            "Submit requests answered 200 (queued, or an idempotent resubmission).",
            registry=self.registry,
        )
        self.rejected = Counter(
            "dispatcher_rejected",
            "Submit requests refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self._rejected = {
            code: self.rejected.labels(reason) for code, reason in REJECT_REASONS.items()
        }
        self._rejected_other = self.rejected.labels("other")
        self.registry.register(RedisCollector(store, broker, queue))

    def count_submit(self, code: int) -> None:
        """One submit answered ``code``."""
        self.submitted.inc()
        if code == 200:
            self.accepted.inc()
        else:
            self._rejected.get(code, self._rejected_other).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RedisCollector(Collector):
    """Fleet-wide figures from Redis, read at scrape time.

    ``broker`` None means the broker is the same Redis as ``store`` (one
    pipeline for everything).
    """

    def __init__(self, store: redis.Redis, broker: redis.Redis | None, queue: str) -> None:
        self.store = store
        self.broker = broker
        self.queue = queue

    def _read_store(self) -> tuple[dict[str, int], int, int | None]:
        pipe = self.store.pipeline(transaction=False)
        pipe.hgetall(keys.STATS)
        pipe.zcard(keys.DEAD_LETTERS)
        if self.broker is None:
            pipe.llen(self.queue)
        replies = pipe.execute()
        stats = {text(k): int(v) for k, v in replies[0].items()}
        depth = int(replies[2]) if self.broker is None else None
        return stats, int(replies[1]), depth

    def collect(self) -> Iterator[Metric]:
        redis_up = GaugeMetricFamily(
            "dispatcher_redis_up", "1 when this scrape could read the status store's Redis."
        )
        broker_up = GaugeMetricFamily(
            "dispatcher_broker_up", "1 when this scrape could read the broker's queue length."
        )
        depth: int | None = None
        try:
            stats, dead, depth = self._read_store()
        except REDIS_ERRORS as exc:
            log.warning("metrics: Redis unreachable, fleet figures left out: %s", exc)
            stats, dead = None, 0
        if self.broker is not None:
            try:
                depth = int(self.broker.llen(self.queue))
            except REDIS_ERRORS as exc:
                log.warning("metrics: broker unreachable, queue depth left out: %s", exc)
        redis_up.add_metric([], 0 if stats is None else 1)
        broker_up.add_metric([], 0 if depth is None else 1)
        yield redis_up
        yield broker_up
        if depth is not None:
            yield GaugeMetricFamily(
                "dispatcher_queue_depth", "Messages waiting in the Celery queue.", value=depth
            )
        if stats is None:
            return
        yield GaugeMetricFamily(
            "dispatcher_dead_letters", "Messages in the dead-letter list.", value=dead
        )
        for state, (name, documentation) in TRANSITIONS.items():
            yield CounterMetricFamily(name, documentation, value=stats.get(f"state:{state}", 0))
        count = stats.get("latency:count", 0)
        buckets: list[tuple[str, float]] = [
            (str(bound / 1000), stats.get(f"latency:le:{bound}", 0)) for bound in LATENCY_BUCKETS_MS
        ]
        buckets.append(("+Inf", count))
        yield HistogramMetricFamily(
            "dispatcher_delivery_latency_seconds",
            "Time from acceptance to delivery (status record createdAt to deliveredAt).",
            buckets=buckets,
            sum_value=stats.get("latency:sum_ms", 0) / 1000,
        )
