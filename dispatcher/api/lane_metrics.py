"""``/metrics`` figures per lane: (provider app, client, priority), read from the ``lane:*``
fields of the shared stats hash (dispatcher/store/lanes.py; docs/operations.md, "Metrics")."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from dispatcher.store.lanes import WAIT, WAIT_BUCKETS_MS, Lane, parse_field

LABELS = ["app", "client", "priority"]


def lane_metrics(stats: dict[str, int]) -> Iterator[Metric]:
    """Backlog, deliveries and first-attempt waits of every lane the stats hash names."""
    lanes: dict[Lane, dict[str, int]] = defaultdict(dict)
    for field, value in stats.items():
        parsed = parse_field(field)
        if parsed is not None:
            lanes[parsed[0]][parsed[1]] = value
    backlog = GaugeMetricFamily(
        "dispatcher_lane_backlog",
        "Messages accepted and not yet delivered, failed, dead or cancelled, by provider app, "
        "client and priority.",
        labels=LABELS,
    )
    delivered = CounterMetricFamily(
        "dispatcher_lane_delivered",
        "Messages delivered, by provider app, client and priority (rate(): delivered/s).",
        labels=LABELS,
    )
    wait = HistogramMetricFamily(
        "dispatcher_lane_wait_seconds",
        "Time from acceptance (or the sendAt waited for) to the first delivery attempt, by "
        "provider app, client and priority.",
        labels=LABELS,
    )
    for lane, fields in sorted(lanes.items(), key=lambda item: item[0].prefix):
        labels = [lane.app, lane.client, lane.priority]
        backlog.add_metric(labels, max(0, fields.get("accepted", 0) - fields.get("ended", 0)))
        delivered.add_metric(labels, fields.get("delivered", 0))
        buckets: list[tuple[str, float]] = [
            (str(bound / 1000), fields.get(f"{WAIT}le:{bound}", 0)) for bound in WAIT_BUCKETS_MS
        ]
        buckets.append(("+Inf", fields.get(f"{WAIT}count", 0)))
        wait.add_metric(labels, buckets, fields.get(f"{WAIT}sum_ms", 0) / 1000)
    yield backlog
    yield delivered
    yield wait
