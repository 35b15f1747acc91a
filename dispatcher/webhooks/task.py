"""One claimed delivery, sent and recorded: what the ``dispatcher.webhook`` task runs."""

from __future__ import annotations

import logging
import time
from functools import cached_property
from typing import Any

import httpx
from celery import Task

from dispatcher.channels.http import PerThreadHttp
from dispatcher.config import Settings, get_settings
from dispatcher.connections import redis_client
from dispatcher.webhooks.config import Subscriptions
from dispatcher.webhooks.outbox import Delivery, Outcome, WebhookStore
from dispatcher.webhooks.send import Verdict, post

log = logging.getLogger(__name__)

WEBHOOK_TASK = "dispatcher.webhook"


def deliver_webhook(
    delivery: Delivery | None,
    claim: int,
    *,
    disabled: str | None,
    settings: Settings,
    subscriptions: Subscriptions,
    store: WebhookStore,
    http: PerThreadHttp,
) -> str:
    """Attempt the delivery once, if ``claim`` is still its newest; returns what happened.
    ``disabled``: why its endpoint is disabled, or None."""
    if delivery is None or delivery.claim != claim:
        return "stale"
    message_id = _message_id(delivery)
    configured = subscriptions.endpoints.get(delivery.endpoint_id)
    if configured is None:
        return _give_up(store, delivery, message_id, "endpoint no longer configured")
    if disabled:
        return _give_up(store, delivery, message_id, f"endpoint disabled: {disabled}")
    _, endpoint = configured

    answer = post(
        http,
        endpoint,
        delivery.webhook_id,
        delivery.body,
        allow_loopback=settings.webhook_allow_loopback,
    )
    attempt = delivery.attempts + 1
    where = f"getMessageId={message_id} webhook-id={delivery.webhook_id} endpoint={delivery.endpoint_id}"
    if answer.verdict is Verdict.DELIVERED:
        store.record(delivery, Outcome.DELIVERED, attempted=True, status=answer.status)
        log.info("%s delivered attempt=%d status=%s", where, attempt, answer.status)
        return "delivered"

    schedule = settings.webhook_schedule
    disable = None
    if answer.verdict is Verdict.GONE:
        disable = "the endpoint answered 410 Gone"
    elif _failing_too_long(store, delivery.endpoint_id, settings.webhook_disable_after):
        disable = f"failing for {settings.webhook_disable_after // 86400 or 1} day(s) or more"
    if disable is None and attempt < len(schedule):
        delay = max(schedule[attempt], answer.retry_after or 0.0)
        store.record(
            delivery,
            Outcome.RETRYING,
            attempted=True,
            status=answer.status,
            error=answer.error,
            next_in=delay,
        )
        log.warning("%s attempt=%d failed (%s), next in %.0fs", where, attempt, answer.error, delay)
        return "retrying"
    store.record(
        delivery,
        Outcome.DEAD,
        attempted=True,
        status=answer.status,
        error=answer.error,
        disable=disable,
    )
    log.error(
        "%s dead after attempt=%d: %s%s",
        where,
        attempt,
        answer.error,
        f"; {disable}" if disable else "",
    )
    return "dead"


def _give_up(store: WebhookStore, delivery: Delivery, message_id: str, why: str) -> str:
    store.record(delivery, Outcome.DEAD, attempted=False, error=why)
    log.warning(
        "getMessageId=%s webhook-id=%s endpoint=%s not sent: %s",
        message_id,
        delivery.webhook_id,
        delivery.endpoint_id,
        why,
    )
    return "dead"


def _failing_too_long(store: WebhookStore, endpoint_id: str, limit_seconds: int) -> bool:
    since = store.endpoint_health(endpoint_id).get("failingSince")
    return since is not None and time.time() - int(since) / 1000 >= limit_seconds


def _message_id(delivery: Delivery) -> str:
    summary = delivery.summary()
    return str(summary.get("getMessageId") or "?")


class WebhookTask(Task):  # type: ignore[misc]  # celery is untyped
    """Holds the per-process runtime of the webhook task (built on first use)."""

    @cached_property
    def settings(self) -> Settings:
        return get_settings()

    @cached_property
    def subscriptions(self) -> Subscriptions:
        return self.settings.webhook_subscriptions()

    @cached_property
    def store(self) -> WebhookStore:
        return WebhookStore(redis_client(self.settings), dead_ttl=self.settings.status_ttl)

    @cached_property
    def http(self) -> PerThreadHttp:
        # The bare transport per thread: cheap, and it never follows a redirect.
        return PerThreadHttp(httpx.Timeout(self.settings.webhook_timeout), {})


def run_webhook_task(self: WebhookTask, batch: list[list[Any]], claimed_at: float) -> list[str]:
    """Send claimed deliveries of one endpoint in turn (claimed at ``claimed_at``, unix
    time). One whose claim would end before its request could time out is released (due
    again now), never sent on a claim that may have passed to another worker."""
    settings, store = self.settings, self.store
    deadline = claimed_at + settings.webhook_claim_seconds - settings.webhook_timeout
    claims = [(str(member), int(claim)) for member, claim in batch]
    deliveries = store.deliveries([member for member, _ in claims])
    disabled = store.disabled(claims[0][0].partition(":")[0]) if claims else None
    outcomes = []
    for (_, claim), delivery in zip(claims, deliveries, strict=True):
        if time.time() > deadline:
            if delivery is not None and delivery.claim == claim:
                store.record(delivery, Outcome.RELEASED, attempted=False)
            outcomes.append("released")
            continue
        outcome = deliver_webhook(
            delivery,
            claim,
            disabled=disabled,
            settings=settings,
            subscriptions=self.subscriptions,
            store=store,
            http=self.http,
        )
        if outcome == "dead" and delivery is not None:  # a 410 or a long failure disables
            disabled = store.disabled(delivery.endpoint_id)
        outcomes.append(outcome)
    return outcomes
