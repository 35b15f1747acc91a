"""A batch of claimed deliveries to one endpoint, sent and recorded: the
``dispatcher.webhook`` task.

The batch is read in one round trip (its deliveries and the endpoint's health), its
requests go out concurrently on the process's kept-alive connections, and every
outcome is recorded in one script call (docs/webhooks.md, "Cost").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import urlsplit

from celery import Task

from dispatcher import tracing
from dispatcher.config import Settings, get_settings
from dispatcher.connections import redis_client
from dispatcher.webhooks.config import Subscriptions, WebhookEndpoint
from dispatcher.webhooks.outbox import Delivery, Outcome, Result, WebhookStore
from dispatcher.webhooks.send import Answer, Verdict, WebhookHttp, post

log = logging.getLogger(__name__)

WEBHOOK_TASK = "dispatcher.webhook"

T = TypeVar("T")
R = TypeVar("R")

SENDERS = 64
"""Webhook requests in flight at once per worker process (threads, each with its own
connections: :class:`WebhookHttp`)."""
PER_ENDPOINT = 16
"""Of those, at most this many to one endpoint: a slow receiver never takes them all."""


def judge(
    delivery: Delivery,
    answer: Answer,
    *,
    settings: Settings,
    failing_since_ms: int | None,
) -> Result:
    """What an attempt's answer makes of the delivery: done, retried later or dead (and
    whether its endpoint is disabled). ``failing_since_ms``: the endpoint's failure
    streak before this batch."""
    if answer.verdict is Verdict.DELIVERED:
        return Result(delivery, Outcome.DELIVERED, True, answer.status)
    attempt = delivery.attempts + 1
    schedule = settings.webhook_schedule
    disable = None
    if answer.verdict is Verdict.GONE:
        disable = "the endpoint answered 410 Gone"
    elif (
        failing_since_ms is not None
        and time.time() - failing_since_ms / 1000 >= settings.webhook_disable_after
    ):
        disable = f"failing for {settings.webhook_disable_after // 86400 or 1} day(s) or more"
    if disable is None and attempt < len(schedule):
        delay = max(schedule[attempt], answer.retry_after or 0.0)
        return Result(delivery, Outcome.RETRYING, True, answer.status, answer.error, next_in=delay)
    return Result(delivery, Outcome.DEAD, True, answer.status, answer.error, disable=disable)


def _log(result: Result) -> None:
    """One line per outcome naming the getMessageId and ``webhook-id``, formatted only
    when its level is enabled."""
    delivery = result.delivery
    attempt = delivery.attempts + 1
    if not result.attempted:
        if result.outcome is Outcome.DEAD:
            log.warning("getMessageId=%s webhook-id=%s endpoint=%s not sent: %s",
                        _message_id(delivery), delivery.webhook_id, delivery.endpoint_id,
                        result.error)  # fmt: skip
    elif result.outcome is Outcome.DELIVERED:
        if log.isEnabledFor(logging.INFO):
            log.info("getMessageId=%s webhook-id=%s endpoint=%s delivered attempt=%d status=%s",
                     _message_id(delivery), delivery.webhook_id, delivery.endpoint_id,
                     attempt, result.status)  # fmt: skip
    elif result.outcome is Outcome.RETRYING:
        log.warning("getMessageId=%s webhook-id=%s endpoint=%s attempt=%d failed (%s), "
                    "next in %.0fs", _message_id(delivery), delivery.webhook_id,
                    delivery.endpoint_id, attempt, result.error, result.next_in)  # fmt: skip
    else:
        log.error("getMessageId=%s webhook-id=%s endpoint=%s dead after attempt=%d: %s%s",
                  _message_id(delivery), delivery.webhook_id, delivery.endpoint_id, attempt,
                  result.error, f"; {result.disable}" if result.disable else "")  # fmt: skip


def _message_id(delivery: Delivery) -> str:
    if delivery.message_id:
        return delivery.message_id
    summary = delivery.summary()  # a delivery made before deliveries named their message
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
    def http(self) -> WebhookHttp:
        return WebhookHttp(
            timeout=self.settings.webhook_timeout,
            allow_loopback=self.settings.webhook_allow_loopback,
        )

    @cached_property
    def senders(self) -> Senders:
        return Senders()


class Senders:
    """The threads a worker process sends webhooks on, at most PER_ENDPOINT of them to
    one endpoint at a time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="dispatcher-webhook-send")
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def map(self, endpoint_id: str, send: Callable[[T], R], items: list[T]) -> list[R]:
        """``send`` of each item, the results in order. The items are dealt into up to
        PER_ENDPOINT shares, each sent in turn by one thread: a hand-over between threads
        costs about as much CPU as a request, so there is one per share, not per item."""
        with self._lock:
            slots = self._slots.setdefault(endpoint_id, threading.BoundedSemaphore(PER_ENDPOINT))
        shares = min(PER_ENDPOINT, len(items))

        def send_share(share: list[T]) -> list[R]:
            try:
                return [send(item) for item in share]
            finally:
                slots.release()

        futures = []
        for first in range(shares):
            slots.acquire()
            futures.append(self._pool.submit(send_share, items[first::shares]))
        results: list[R] = [None] * len(items)  # type: ignore[list-item]  # all filled below
        for first, future in enumerate(futures):
            results[first::shares] = future.result()
        return results


def run_webhook_task(self: WebhookTask, batch: list[list[Any]], claimed_at: float) -> list[str]:
    """Send claimed deliveries of one endpoint (claimed at ``claimed_at``, unix time);
    per delivery delivered, retrying, dead, released or stale. One whose claim would end
    before its request could time out is released (due again now), never sent on a claim
    that may have passed to another worker."""
    settings, store = self.settings, self.store
    deadline = claimed_at + settings.webhook_claim_seconds - settings.webhook_timeout
    claims = [(str(member), int(claim)) for member, claim in batch]
    if not claims:
        return []
    endpoint_id = claims[0][0].partition(":")[0]
    deliveries, health = store.deliveries_and_health([m for m, _ in claims], endpoint_id)
    configured = self.subscriptions.endpoints.get(endpoint_id)
    disabled = health.get("disabled")
    outcomes: dict[str, str] = {}
    results: list[Result] = []
    to_send: list[Delivery] = []
    for (member, claim), delivery in zip(claims, deliveries, strict=True):
        if delivery is None or delivery.claim != claim:
            outcomes[member] = "stale"
        elif configured is None:
            results.append(Result(delivery, Outcome.DEAD, False, error="endpoint no longer configured"))  # fmt: skip
        elif disabled:
            results.append(Result(delivery, Outcome.DEAD, False, error=f"endpoint disabled: {disabled}"))  # fmt: skip
        else:
            to_send.append(delivery)
    if to_send and configured is not None:
        endpoint = configured[1]
        answers = self.senders.map(
            endpoint_id, lambda d: _send(self.http, endpoint, d, deadline), to_send
        )
        failing_since = health.get("failingSince")
        for delivery, answer in zip(to_send, answers, strict=True):
            if answer is None:
                results.append(Result(delivery, Outcome.RELEASED, False))
                continue
            since = int(failing_since) if failing_since else None
            results.append(judge(delivery, answer, settings=settings, failing_since_ms=since))
    store.record_all(results)
    for result in results:
        _log(result)
        outcomes[result.delivery.member] = result.outcome.value
    return [outcomes[member] for member, _ in claims]


def _send(
    http: WebhookHttp, endpoint: WebhookEndpoint, delivery: Delivery, deadline: float
) -> Answer | None:
    """One attempt, or None when the claim's time ran out before it could be sent. When
    tracing is on, the attempt is a client span in its message's trace."""
    if time.time() > deadline:
        return None
    if not tracing.enabled():
        return post(http, endpoint, delivery.webhook_id, delivery.body)
    attributes: dict[str, str | int | None] = {
        tracing.MESSAGE_ID: _message_id(delivery),
        tracing.WEBHOOK_ID: delivery.webhook_id,
        tracing.ENDPOINT: delivery.endpoint_id,
        tracing.ATTEMPT: delivery.attempts + 1,
        tracing.HTTP_METHOD: "POST",
        tracing.URL_FULL: endpoint.url,  # its query values and credentials are redacted
        tracing.SERVER_ADDRESS: urlsplit(endpoint.url).hostname,
    }
    with tracing.continuing(delivery.traceparent, tracing.SPAN_WEBHOOK, attributes, client=True):
        answer = post(http, endpoint, delivery.webhook_id, delivery.body)
        tracing.annotate(
            {tracing.HTTP_STATUS: answer.status, tracing.OUTCOME: answer.verdict.value}
        )
        return answer
