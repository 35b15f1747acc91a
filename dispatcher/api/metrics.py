"""Prometheus metrics of the API: its own counters plus the fleet's, read from Redis.

Each app has its own :class:`CollectorRegistry` (no global state, so tests and
several apps in one process do not collide). With several API processes behind one
port (``dispatcher api --workers N``) each process writes its counters to files in
``PROMETHEUS_MULTIPROC_DIR`` and every scrape sums all of them, whichever process
answers it (prometheus_client's multiprocess mode; docs/operations.md, "Metrics"). The workers' figures (transitions,
provider errors, delivery latency) live in the shards' Redis hashes (``Shard.stats``);
a custom collector reads them at scrape time with what else the store keeps (the
dead letters, the in-flight index, each queue's backlog) and Redis's memory, so
there is no second metrics store. docs/operations.md lists every metric and the
dashboard and alerts built on them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from dispatcher import keys
from dispatcher.api.lane_metrics import lane_metrics
from dispatcher.backlog import QueueBacklog, read_backlog, with_pending
from dispatcher.broker_probe import AmqpProbe, BrokerUnreachable
from dispatcher.connections import REDIS_ERRORS
from dispatcher.errors import Busy
from dispatcher.health import MemoryUsage, memory_usage
from dispatcher.store import LATENCY_BUCKETS_MS, StatusStore
from dispatcher.store.durations import ATTEMPT_BUCKETS_MS, ATTEMPT_PREFIX
from dispatcher.store.read import over_shards, sum_counters

log = logging.getLogger(__name__)

_BROKER_ERRORS: tuple[type[Exception], ...] = (*REDIS_ERRORS, BrokerUnreachable)

REJECT_REASONS: dict[int, str] = {
    400: "invalid",
    401: "unauthorized",
    403: "forbidden",
    409: "conflict",
    413: "too_large",
    429: "rate_limited",
    503: "unavailable",
}
"""``reason`` label of ``dispatcher_rejected_total`` by answer code."""

BUSY = "busy"
"""``reason`` of a 503 answered because the service was saturated (docs/operations.md)."""

TRANSITIONS = {
    "delivered": ("dispatcher_delivered", "Messages delivered to the provider."),
    "failed": ("dispatcher_failed", "Messages failed permanently."),
    "dead": ("dispatcher_dead", "Messages that used up their retries (dead letters)."),
    "retrying": ("dispatcher_retries", "Delivery attempts that will be retried."),
    "scheduled": ("dispatcher_scheduled", "Messages accepted with a later sendAt."),
    "cancelled": ("dispatcher_cancelled", "Messages cancelled before they were sent."),
    "recalled": ("dispatcher_recalled", "Delivered messages recalled from every recipient."),
}
"""Counters read from ``state:<state>`` in the shared stats hash."""

LABELLED = {
    "provider:": (
        "dispatcher_provider_errors",
        "status",
        "Delivery attempts the provider answered with an HTTP error, by status (429: throttled).",
    ),
    "rejected:": (
        "dispatcher_queue_messages_dropped",
        "reason",
        "Queue messages no status record could hold (undecodable, unknown task) and records that "
        "expired before their message ended (expired), by reason.",
    ),
}
"""Counters read from ``<prefix><label value>`` fields of the shared stats hash."""

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
"""Set by ``dispatcher api --workers N`` (N > 1) for its processes; prometheus_client reads it
when a metric is made."""

NO_CLIENT = "-"
"""``client`` label of submits without a configured client (unsigned, or refused first)."""


class ApiMetrics:
    """The API's counters and the registry ``/metrics`` renders.

    ``clients`` are the configured client names: the only values of the ``client``
    label besides :data:`NO_CLIENT`, so callers cannot grow the label set.
    """

    def __init__(self, fleet: RedisCollector, clients: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.collectors: list[Collector] = []
        """Figures read at scrape time (from Redis): the same whichever process answers."""
        self.submitted = Counter(
            "dispatcher_submitted",
            "Submit requests received by this API process.",
            registry=self.registry,
        )
        self.accepted = Counter(
            "dispatcher_accepted",
            "Submit requests answered 200 (queued, or an idempotent resubmission), by client.",
            ["client"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "dispatcher_rejected",
            "Submit requests refused, by reason and client.",
            ["reason", "client"],
            registry=self.registry,
        )
        self.submits_in_flight = Gauge(
            "dispatcher_submits_in_flight",
            "Submit requests the API processes are working on now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._clients = frozenset(clients)
        for client in (*self._clients, NO_CLIENT):  # every series from zero, for rate()
            self.accepted.labels(client)
            for reason in (*REJECT_REASONS.values(), BUSY, "other"):
                self.rejected.labels(reason, client)
        self.add_collector(fleet)

    def add_collector(self, collector: Collector) -> None:
        self.collectors.append(collector)
        self.registry.register(collector)

    def count_submit(
        self, code: int, client: str | None = None, refusal: Exception | None = None
    ) -> None:
        """One submit by ``client`` (None: not known) answered ``code``; ``refusal``: the error
        behind a refusal, which tells a busy 503 from an unavailable one."""
        self.submitted.inc()
        label = client if client in self._clients else NO_CLIENT
        if code == 200:
            self.accepted.labels(label).inc()
        else:
            reason = BUSY if isinstance(refusal, Busy) else REJECT_REASONS.get(code, "other")
            self.rejected.labels(reason, label).inc()

    def render(self) -> bytes:
        if not os.environ.get(MULTIPROCESS_DIR):
            return generate_latest(self.registry)
        every_process = CollectorRegistry()
        MultiProcessCollector(every_process)  # type: ignore[no-untyped-call]  # untyped upstream
        for collector in self.collectors:
            every_process.register(collector)
        return generate_latest(every_process)

    @staticmethod
    def process_exits() -> None:
        """Drop this process's live gauges from the shared files (its counters stay)."""
        if os.environ.get(MULTIPROCESS_DIR):
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]  # untyped upstream


@dataclass(frozen=True)
class StoreFigures:
    """What one scrape read from the status store's Redis."""

    stats: dict[str, int]
    dead_letters: int
    in_flight: int
    scheduled: int
    memory: MemoryUsage | None


class RedisCollector(Collector):
    """Fleet-wide figures from Redis, read at scrape time.

    ``broker`` None means the broker is the same Redis as the store; another Redis
    or RabbitMQ (:class:`AmqpProbe`) gives queue depths only. Clients should time out
    fast (the API's probe clients), so a scrape answers while Redis is down, with
    ``dispatcher_redis_up 0``.
    """

    def __init__(
        self,
        store: StatusStore,
        broker: redis.Redis | AmqpProbe | None,
        queues: list[str],
        memory_refuse_ratio: float,
        *,
        doorbell: bool = False,
    ) -> None:
        self.doorbell = doorbell
        """Messages wait on the queues' pending lists too (``backlog.with_pending``)."""
        self.store = store
        self.broker = broker
        self.queues = queues
        self.memory_refuse_ratio = memory_refuse_ratio

    def _read_store(self) -> StoreFigures:
        def read(pipe: Any, shard: keys.Shard) -> None:
            pipe.hgetall(shard.stats)
            pipe.zcard(shard.dead)
            pipe.zcard(shard.inflight)
            pipe.zcard(shard.schedule)

        replies = over_shards(self.store.redis, read)
        return StoreFigures(
            sum_counters(replies[0::4]),
            sum(int(n) for n in replies[1::4]),
            sum(int(n) for n in replies[2::4]),
            sum(int(n) for n in replies[3::4]),
            _memory(self.store.redis),
        )

    def _read_backlog(self, store_readable: bool) -> list[QueueBacklog]:
        """Each queue's depth, and its oldest entry's age when the store can say."""
        backlog = self._read_broker_backlog(store_readable)
        return with_pending(self.store, backlog) if self.doorbell and store_readable else backlog

    def _read_broker_backlog(self, store_readable: bool) -> list[QueueBacklog]:
        if isinstance(self.broker, AmqpProbe):
            depths = self.broker.depths(self.queues)
            return [QueueBacklog(q, d, None) for q, d in zip(self.queues, depths, strict=True)]
        if store_readable:
            return read_backlog(self.broker or self.store.redis, self.store, self.queues)
        assert self.broker is not None
        return [QueueBacklog(q, int(self.broker.llen(q)), None) for q in self.queues]

    def collect(self) -> Iterator[Metric]:
        figures: StoreFigures | None = None
        backlog: list[QueueBacklog] | None = None
        broker_memory: MemoryUsage | None = None
        try:
            figures = self._read_store()
        except REDIS_ERRORS as exc:
            log.warning("metrics: Redis unreachable, fleet figures left out: %s", exc)
        # With one Redis for both, a store that did not answer leaves nothing to ask.
        if figures is not None or self.broker is not None:
            try:
                backlog = self._read_backlog(figures is not None)
                if isinstance(self.broker, redis.Redis):
                    broker_memory = _memory(self.broker)
            except _BROKER_ERRORS as exc:
                log.warning("metrics: broker unreachable, queue backlog left out: %s", exc)
        yield GaugeMetricFamily(
            "dispatcher_redis_up",
            "1 when this scrape could read the status store's Redis.",
            value=0 if figures is None else 1,
        )
        yield GaugeMetricFamily(
            "dispatcher_broker_up",
            "1 when this scrape could read the broker's queues.",
            value=0 if backlog is None else 1,
        )
        yield GaugeMetricFamily(
            "dispatcher_redis_memory_refuse_ratio",
            "Share of Redis maxmemory at which the API refuses submits (503).",
            value=self.memory_refuse_ratio,
        )
        if backlog is not None:
            yield from _backlog_metrics(backlog)
        store_memory = figures.memory if figures is not None else None
        memory = [
            (role, usage)
            for role, usage in (("store", store_memory), ("broker", broker_memory))
            if usage is not None
        ]
        yield from _memory_metrics(memory)
        if figures is not None:
            yield from _store_metrics(figures)


def _backlog_metrics(backlog: list[QueueBacklog]) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "dispatcher_queue_depth", "Messages waiting in the Celery queue.", labels=["queue"]
    )
    age = GaugeMetricFamily(
        "dispatcher_queue_oldest_age_seconds",
        "Seconds the next message in line has waited since it was queued (0: empty).",
        labels=["queue"],
    )
    for queue in backlog:
        depth.add_metric([queue.queue], queue.depth)
        if queue.depth == 0:
            age.add_metric([queue.queue], 0.0)
        elif queue.oldest_age is not None:
            age.add_metric([queue.queue], queue.oldest_age)
    yield depth
    yield age


def _memory_metrics(memory: list[tuple[str, MemoryUsage]]) -> Iterator[Metric]:
    used = GaugeMetricFamily(
        "dispatcher_redis_memory_used_bytes",
        "Redis used_memory, by role (store; broker when it is another Redis).",
        labels=["role"],
    )
    limit = GaugeMetricFamily(
        "dispatcher_redis_memory_max_bytes",
        "Redis maxmemory (0: no limit), by role.",
        labels=["role"],
    )
    for role, usage in memory:
        used.add_metric([role], usage.used)
        limit.add_metric([role], usage.limit)
    yield used
    yield limit


def _store_metrics(figures: StoreFigures) -> Iterator[Metric]:
    stats = figures.stats
    yield GaugeMetricFamily(
        "dispatcher_dead_letters", "Messages in the dead-letter list.", value=figures.dead_letters
    )
    yield GaugeMetricFamily(
        "dispatcher_in_flight",
        "Messages accepted and not yet delivered, failed or dead, other than those waiting "
        "in the schedule.",
        value=figures.in_flight,
    )
    yield GaugeMetricFamily(
        "dispatcher_scheduled_waiting",
        "Messages waiting in the schedule: a sendAt still ahead, or a retry before its due "
        "time (not counted as in flight).",
        value=figures.scheduled,
    )
    for state, (name, documentation) in TRANSITIONS.items():
        yield CounterMetricFamily(name, documentation, value=stats.get(f"state:{state}", 0))
    yield CounterMetricFamily(
        "dispatcher_recovered",
        "Messages re-enqueued by recovery (a lost worker, or a queue entry overdue).",
        value=stats.get("recovered", 0),
    )
    for prefix, (name, label, documentation) in LABELLED.items():
        family = CounterMetricFamily(name, documentation, labels=[label])
        for field, value in sorted(stats.items()):
            if field.startswith(prefix):
                family.add_metric([field.removeprefix(prefix)], value)
        yield family
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
    yield _attempt_durations(stats)
    yield from lane_metrics(stats)


def _attempt_durations(stats: dict[str, int]) -> Metric:
    """``attempt:<channel>:*`` fields (dispatcher/store/durations.py), one series per channel."""
    family = HistogramMetricFamily(
        "dispatcher_attempt_duration_seconds",
        "Time one delivery attempt took, from its lease to its recorded outcome, by channel.",
        labels=["channel"],
    )
    channels = sorted(
        field.removeprefix(ATTEMPT_PREFIX).removesuffix(":count")
        for field in stats
        if field.startswith(ATTEMPT_PREFIX) and field.endswith(":count")
    )
    for channel in channels:
        prefix = f"{ATTEMPT_PREFIX}{channel}:"
        buckets: list[tuple[str, float]] = [
            (str(bound / 1000), stats.get(f"{prefix}le:{bound}", 0)) for bound in ATTEMPT_BUCKETS_MS
        ]
        buckets.append(("+Inf", stats.get(f"{prefix}count", 0)))
        family.add_metric([channel], buckets, stats.get(f"{prefix}sum_ms", 0) / 1000)
    return family


def _memory(client: redis.Redis) -> MemoryUsage | None:
    """``INFO memory``, or None where a managed Redis does not offer INFO."""
    try:
        return memory_usage(client)
    except redis.ResponseError as exc:
        log.debug("metrics: no INFO memory: %s", exc)
        return None
