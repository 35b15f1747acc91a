"""Webhook figures for ``/metrics``, read from Redis at scrape time like the fleet's:
per endpoint attempts, successes, failures and whether it is disabled; the backlog."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatcher.connections import REDIS_ERRORS
from dispatcher.webhooks.config import Subscriptions
from dispatcher.webhooks.outbox import WebhookStore

log = logging.getLogger(__name__)

_COUNTERS = {
    "attempts": "Webhook requests sent, by endpoint.",
    "successes": "Webhook requests answered 2xx, by endpoint.",
    "failures": "Webhook requests that failed (error answer, timeout, refused), by endpoint.",
}


class WebhookCollector(Collector):
    def __init__(self, store: WebhookStore, subscriptions: Subscriptions) -> None:
        self.store = store
        self.subscriptions = subscriptions

    def collect(self) -> Iterator[Metric]:
        if not self.subscriptions.endpoints:
            return
        try:
            health = {e: self.store.endpoint_health(e) for e in self.subscriptions.endpoints}
            backlog = self.store.backlog()
        except REDIS_ERRORS as exc:
            log.warning("webhook metrics: Redis unavailable (%s)", exc)
            return
        labels = ["endpoint", "client"]
        for field, help_text in _COUNTERS.items():
            family = CounterMetricFamily(f"dispatcher_webhook_{field}", help_text, labels=labels)
            for endpoint_id, (client, _) in self.subscriptions.endpoints.items():
                family.add_metric([endpoint_id, client], float(health[endpoint_id].get(field, 0)))
            yield family
        disabled = GaugeMetricFamily(
            "dispatcher_webhook_endpoint_disabled",
            "1 while the endpoint is disabled.",
            labels=labels,
        )
        for endpoint_id, (client, _) in self.subscriptions.endpoints.items():
            disabled.add_metric(
                [endpoint_id, client], 1.0 if "disabled" in health[endpoint_id] else 0.0
            )
        yield disabled
        waiting = GaugeMetricFamily(
            "dispatcher_webhook_backlog",
            "Webhook events not yet fanned out (outbox), deliveries pending, dead.",
            labels=["stage"],
        )
        for stage, count in backlog.items():
            waiting.add_metric([stage], float(count))
        yield waiting
