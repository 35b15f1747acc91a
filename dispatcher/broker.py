"""The broker side both producers and workers share: the Celery app's configuration,
kombu's Redis transport with our fixes, and the trace of queue messages Celery drops.

Reliability settings: late acks and reject-on-worker-loss so a killed worker's
message is redelivered; prefetch of one; no result backend (the status store is
the source of truth). docs/reliability.md tells which fault each setting answers.

Two brokers are supported (docs/deployment.md): Redis (by default the status store's
own, so a submit records and enqueues in one script) and RabbitMQ (``amqp://``), where
every queue is a quorum queue and every publish waits for the broker's confirmation.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import redis
from celery import Celery
from celery.worker.consumer import Consumer
from kombu.entity import Queue
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps as json_dumps

from dispatcher.config import Settings, get_settings
from dispatcher.connections import REDIS_ERRORS, redis_client
from dispatcher.sentinel import SENTINEL_SCHEME, is_sentinel_url, kombu_broker
from dispatcher.store import StatusStore

log = logging.getLogger(__name__)


class BrokerKind(StrEnum):
    """The brokers dispatcher is built and tested for."""

    REDIS = "redis"
    AMQP = "amqp"


BROKER_SCHEMES = {
    "redis": BrokerKind.REDIS,
    "rediss": BrokerKind.REDIS,
    "redis+socket": BrokerKind.REDIS,
    SENTINEL_SCHEME: BrokerKind.REDIS,
    "amqp": BrokerKind.AMQP,
    "amqps": BrokerKind.AMQP,
    "pyamqp": BrokerKind.AMQP,
}


def broker_kind(url: str) -> BrokerKind:
    """Which broker ``url`` names; ValueError for one dispatcher does not support."""
    scheme = urlsplit(url).scheme.lower()
    try:
        return BROKER_SCHEMES[scheme]
    except KeyError:
        supported = ", ".join(f"{s}://" for s in BROKER_SCHEMES)
        raise ValueError(f"unsupported broker URL scheme {scheme!r}: use {supported}") from None


def broker_is_store(settings: Settings) -> bool:
    """The broker is the status store's Redis: queue lists live beside the records, so a
    submit records and enqueues in one script and the reaper can look at the queue."""
    return settings.effective_broker_url == settings.redis_url


def publishes_to_store(celery: Celery, settings: Settings) -> bool:
    """``celery`` publishes to the status store's Redis (as kombu names it: a Sentinel URL
    becomes kombu's list of sentinels), so the create script can push its task."""
    return (
        broker_is_store(settings) and celery.conf.broker_url == kombu_broker(settings.redis_url)[0]
    )


def _transport(url: str) -> str | None:
    """Our Redis transports (kombu's with the fixes below); kombu's own for other URLs."""
    if is_sentinel_url(url):
        return "dispatcher.broker:SentinelBrokerTransport"
    return "dispatcher.broker:BrokerTransport" if url.startswith("redis://") else None


def make_celery(settings: Settings) -> Celery:
    kind = broker_kind(settings.effective_broker_url)
    celery = Celery("dispatcher", set_as_current=False)
    celery.conf.update(
        broker_url=kombu_broker(settings.effective_broker_url)[0],
        broker_transport=_transport(settings.effective_broker_url),
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.queue,
        # A worker started without -Q consumes both; webhooks never wait behind deliveries.
        task_queues=_queues(settings, kind),
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # On SIGTERM, running deliveries get this long to finish; what is left is
        # restored to the queue at once instead of waiting for the visibility timeout.
        worker_soft_shutdown_timeout=settings.shutdown_grace,
        worker_enable_soft_shutdown_on_idle=True,
        worker_hijack_root_logger=False,
        # Traces undecodable and unknown queue messages in Redis before Celery drops them.
        worker_consumer="dispatcher.broker:DispatcherConsumer",
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_pool_limit=16,
        task_publish_retry_policy={
            # Fail fast when the broker is down: the caller gets 503 and may retry.
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    if kind is BrokerKind.AMQP:
        celery.conf.update(_amqp_options())
    else:
        celery.conf.broker_transport_options = _redis_transport_options(settings)
    return celery


def _queues(settings: Settings, kind: BrokerKind) -> tuple[Queue, ...]:
    """The delivery queue and the webhook queue (docs/webhooks.md); quorum queues on
    RabbitMQ, as every queue Celery declares there (:func:`_amqp_options`)."""
    arguments = {"x-queue-type": "quorum"} if kind is BrokerKind.AMQP else None
    return tuple(
        Queue(name, queue_arguments=arguments)  # type: ignore[no-untyped-call]
        for name in (settings.queue, settings.webhook_queue)
    )


def _redis_transport_options(settings: Settings) -> dict[str, Any]:
    return kombu_broker(settings.effective_broker_url)[1] | {
        "visibility_timeout": settings.visibility_timeout,
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
        "health_check_interval": 15,
        "retry_on_timeout": True,
        # Scan for unacked tasks past the visibility timeout every few seconds
        # (kombu's default is ~100 s), so a short timeout means what it says: the tasks a
        # killed worker had fetched are back at the head of the queue within the timeout
        # plus this (docs/reliability.md, "Recovery").
        "unacked_restore_interval": max(1, min(10, settings.visibility_timeout // 4)),
        "unacked_restore_throttle": 1,
        # A worker killed while it restores leaves kombu's restore lock behind: it expires
        # after this, not kombu's 5 minutes, so no restore waits longer than the timeout.
        "unacked_mutex_expire": max(10, settings.visibility_timeout),
    }


AHEAD_HEADER = "dispatcherAhead"
"""A task header asking the Redis broker to put the task at the head of its queue, not the
tail (a recovered attempt: it waited its turn once). Other brokers ignore it."""


AMQP_HEARTBEAT = 30
"""Seconds between AMQP heartbeats: a silently dead peer is noticed within two of them."""


def _amqp_options() -> dict[str, Any]:
    """RabbitMQ: quorum queues (replicated, poison-message aware), publisher confirms.

    Every queue Celery declares is a quorum queue: the delivery queue and any queue a
    task is routed to or a worker is given with ``-Q``, so producers and workers always
    declare a queue with the same arguments. A quorum queue keeps no priorities (RabbitMQ
    3.x) and ignores global QoS: Celery then gives each consumer a fixed prefetch of
    ``worker_concurrency x worker_prefetch_multiplier``, which late acks keep unacked
    until each delivery ends (docs/deployment.md, "RabbitMQ as the broker").
    """
    return {
        "task_default_queue_type": "quorum",
        "task_create_missing_queue_type": "quorum",
        "broker_heartbeat": AMQP_HEARTBEAT,
        "broker_connection_timeout": 2,
        "broker_transport_options": {
            # A publish returns only once RabbitMQ has taken the message (a quorum queue:
            # once a majority of its replicas wrote it); a refusal is an error, not a loss.
            "confirm_publish": True,
            "read_timeout": 5,
            "write_timeout": 5,
        },
    }


class _BrokerChannel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            # kombu 5.7: closing a channel after the broker connection was lost restores
            # its unacked messages through a new pool whose parameters are already gone;
            # the AttributeError is "unrecoverable" to Celery and the worker exits while
            # Redis is down (F3 in docs/reliability.md). A connection error is ignored and the consumer
            # reconnects; the unacked messages wait in Redis for the reaper.
            raise redis.ConnectionError("broker connection already closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[no-untyped-call]

    def _create_client(self, asynchronous: bool = False) -> Any:
        # kombu builds a new redis-py client object (on the same pool) for every publish
        # and every ack: ~60 us of CPU each (redis-py issue 3624; docs/architecture.md, "Costs"). One per
        # channel and pool does the same; connections still come from the pool per command.
        if asynchronous:
            return super()._create_client(asynchronous=True)  # type: ignore[no-untyped-call]
        pool = self.pool
        client = self.__dict__.get("_sync_client")
        if client is None or client.connection_pool is not pool:
            client = super()._create_client()  # type: ignore[no-untyped-call]
            self.__dict__["_sync_client"] = client
        return client

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        headers = message.get("headers") if isinstance(message, dict) else None
        if not (isinstance(headers, dict) and headers.get(AHEAD_HEADER)):
            super()._put(queue, message, **kwargs)  # type: ignore[no-untyped-call]
            return
        # Consumers pop from the right of the list: a right push is next in line.
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client:
            client.rpush(key, json_dumps(message))  # type: ignore[no-untyped-call]

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)  # type: ignore[no-untyped-call]
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # Not a transport envelope (raw bytes pushed to the queue list): kombu's
            # error would stop the worker. The item is already popped: trace it, go on.
            log.exception("queue item is not a kombu message")
            trace_rejected("undecodable", f"not a transport envelope: {type(exc).__name__}", None)
            return True


class BrokerTransport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`_BrokerChannel`."""

    Channel = _BrokerChannel


class _SentinelBrokerChannel(_BrokerChannel, kombu_redis.SentinelChannel):
    """:class:`_BrokerChannel` on kombu's Sentinel channel (dispatcher/sentinel.py)."""


class SentinelBrokerTransport(kombu_redis.SentinelTransport):
    """kombu's Sentinel transport with :class:`_SentinelBrokerChannel`."""

    Channel = _SentinelBrokerChannel


class DispatcherConsumer(Consumer):  # type: ignore[misc]  # celery is untyped
    """Celery's consumer, leaving a trace of each queue message it has to drop (F14 in docs/reliability.md).

    Celery already acks or rejects such messages once (no redelivery loop); they
    carry no status record to dead-letter, so the trace goes to the bounded
    ``rejected`` list and a ``rejected:<reason>`` counter.

    Without Celery's native delayed delivery for quorum queues: it would declare a
    topology of 28 exchanges and queues on RabbitMQ that dispatcher does not use.
    """

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        default_steps = tuple(
            step
            for step in Consumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        )

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        trace_rejected("undecodable", f"{type(exc).__name__}: {exc}", message)
        super().on_decode_error(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        trace_rejected("unknown_message", "not a Celery task message", message)
        super().on_unknown_message(body, message)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        trace_rejected("unknown_task", f"{type(exc).__name__}: {exc}", message)
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        trace_rejected("invalid_task", f"{type(exc).__name__}: {exc}", message)
        super().on_invalid_task(body, message, exc)


def trace_rejected(reason: str, detail: str, message: Any) -> None:
    """Log a queue message Celery or kombu drops, and keep its trace in Redis."""
    log.error("dropping a queue message (%s): %s", reason, detail)
    try:
        body = getattr(message, "body", b"")
        excerpt = body.decode("utf-8", "replace") if isinstance(body, bytes) else repr(body)
        consumer_store().recovery.record_rejected(reason, detail, excerpt)
    except REDIS_ERRORS as exc:
        log.warning("could not record the dropped message in Redis: %s", exc)
    except Exception:
        log.exception("could not record the dropped message")


@cache
def consumer_store() -> StatusStore:
    """The store of the worker's main process (where the consumer runs): a small client."""
    settings = get_settings()
    return StatusStore.from_settings(redis_client(settings, max_connections=2), settings)
