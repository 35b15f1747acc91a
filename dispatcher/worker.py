"""The Celery app and its delivery task: ``celery -A dispatcher.worker worker`` runs it as is.

Nothing is built at import: the app (and the settings it reads) is made on
first use, e.g. when Celery looks up ``dispatcher.worker.app``. Per-process
resources (Redis pool, channels with their HTTP clients) live on the task
object, created on first use in the process that runs tasks, never in a parent
before a fork.
"""

from __future__ import annotations

import gc
import logging
import time
from functools import cache, cached_property
from typing import Any

from celery import Celery, Task, signals
from celery.concurrency import get_implementation

from dispatcher import delivery, ring, tracing
from dispatcher.broker import AHEAD_HEADER, broker_is_store, consumer_store, make_celery
from dispatcher.channels import Channel, open_channels
from dispatcher.config import Settings, get_settings
from dispatcher.connections import redis_client
from dispatcher.doorbell import Doorbell
from dispatcher.enqueue import DELIVER_TASK, RING_TASK, DirectEnqueue, task_args
from dispatcher.health import warn_redis_configuration
from dispatcher.ids import MessageRef
from dispatcher.logs import configure_logging
from dispatcher.ring import deliver_lane
from dispatcher.store import Heartbeat, Reaper, Scheduler, StatusStore
from dispatcher.webhooks.outbox import WebhookStore
from dispatcher.webhooks.pump import WebhookPump
from dispatcher.webhooks.task import WEBHOOK_TASK, WebhookTask, run_webhook_task

log = logging.getLogger(__name__)


class DeliveryTask(Task):  # type: ignore[misc]  # celery is untyped
    """Holds the per-process runtime of the delivery task."""

    @cached_property
    def settings(self) -> Settings:
        return get_settings()

    @cached_property
    def store(self) -> StatusStore:
        return StatusStore.from_settings(redis_client(self.settings), self.settings)

    @cached_property
    def channels(self) -> dict[str, Channel]:
        return open_channels(self.settings, self.store.redis)

    @cached_property
    def resolve_media(self) -> delivery.MediaResolver | None:
        return media_resolver(self.settings, self.store)


@cache
def worker_doorbell() -> Doorbell:
    """The delivery queue's doorbell as this worker rings it (rings, the scheduler, the
    reaper)."""
    settings = get_settings()
    return Doorbell(get_app(), settings, direct=broker_is_store(settings))


def media_resolver(settings: Settings, store: StatusStore) -> delivery.MediaResolver | None:
    """Qiniu-backed media resolution, or None when Qiniu is not configured."""
    needed = (
        settings.qiniu_access_key,
        settings.qiniu_secret_key,
        settings.qiniu_bucket,
        settings.qiniu_domain,
    )
    if not all(needed):
        return None
    from dispatcher.media.qiniu import QiniuClient
    from dispatcher.media.resolve import resolve_media

    client = QiniuClient.from_settings(settings)
    return lambda info: resolve_media(info, client, store.redis)


def _deliver(self: DeliveryTask, member: object) -> str:
    """Deliver one message by reference; the status record carries everything else."""
    if not isinstance(member, str):
        log.error("dropping undecodable delivery task %s: argument %r", self.request.id, member)
        self.store.recovery.record_rejected(
            "invalid_argument", f"task {self.request.id}: argument is not an id", repr(member)
        )
        return "rejected"
    ref = MessageRef.parse(member)
    traceparent = _traceparent(self, ref) if tracing.enabled() else None
    with tracing.continuing(traceparent, tracing.SPAN_ATTEMPT, {tracing.MESSAGE_ID: ref.id}):
        outcome = delivery.attempt(
            ref,
            settings=self.settings,
            store=self.store,
            channels=self.channels,
            resolve_media=self.resolve_media,
            task_id=self.request.id,
        )
        tracing.annotate({tracing.OUTCOME: outcome.state.value})
    # A retry waits in the status store's schedule: the scheduler publishes it when due.
    return outcome.state.value


def _ring(self: Task, lane: object) -> str:
    """Deliver a batch of the messages waiting on the lane (docs/architecture.md, "The
    doorbell"), with the delivery task's per-process runtime; the result names each
    message and its outcome."""
    runtime, bell = delivery_task(), worker_doorbell()
    if lane != bell.lane.name:
        log.error("dropping ring task %s for unknown lane %r", self.request.id, lane)
        runtime.store.recovery.record_rejected(
            "invalid_argument", f"task {self.request.id}: not a lane", repr(lane)
        )
        return "rejected"
    delivered = deliver_lane(
        bell,
        settings=runtime.settings,
        store=runtime.store,
        channels=runtime.channels,
        resolve_media=runtime.resolve_media,
    )
    return " ".join(f"{message_id}:{outcome}" for message_id, outcome in delivered)


def _traceparent(task: DeliveryTask, ref: MessageRef) -> str | None:
    """The trace this attempt continues: the task's header, else (a re-publish by recovery
    or a replay) the one the status record keeps from the submit."""
    header = getattr(task.request, tracing.TRACEPARENT, None)
    if isinstance(header, str) and header:
        return header
    return task.store.read.traceparent(ref)


@cache
def get_app() -> Celery:
    """The worker's Celery app with its task and signal handlers (built once per process)."""
    settings = get_settings()
    app = make_celery(settings)
    app.task(name=DELIVER_TASK, base=DeliveryTask, bind=True, ignore_result=True)(_deliver)
    app.task(name=RING_TASK, bind=True, ignore_result=True)(_ring)
    app.task(name=WEBHOOK_TASK, base=WebhookTask, bind=True, ignore_result=True)(run_webhook_task)
    signals.setup_logging.connect(_configure_worker_logging, weak=False)
    signals.worker_init.connect(_bound_attempts, weak=False)
    signals.worker_ready.connect(_check_redis, weak=False)
    signals.worker_ready.connect(_start_heartbeat, weak=False)
    signals.worker_process_init.connect(_start_heartbeat, weak=False)
    signals.worker_ready.connect(_start_reaper, weak=False)
    signals.worker_ready.connect(_start_webhook_pump, weak=False)
    signals.worker_shutdown.connect(_stop_reaper, weak=False)
    signals.worker_shutdown.connect(_flush_durations, weak=False)
    signals.worker_process_shutdown.connect(_flush_durations, weak=False)
    signals.worker_ready.connect(_start_scheduler, weak=False)
    signals.worker_shutdown.connect(_stop_scheduler, weak=False)
    # Connected last: runs after the other start-up handlers above.
    signals.worker_ready.connect(_freeze_heap, weak=False)
    signals.worker_process_init.connect(_freeze_heap, weak=False)
    return app


def delivery_task() -> DeliveryTask:
    task: DeliveryTask = get_app().tasks[DELIVER_TASK]
    return task


def __getattr__(name: str) -> Any:
    # ``celery -A dispatcher.worker`` looks up ``app``; ``deliver`` is the registered task.
    if name == "app":
        return get_app()
    if name == "deliver":
        return delivery_task()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def publish(ref: MessageRef, **options: Any) -> None:
    """Queue one delivery. Raises kombu/redis errors when the broker is unreachable."""
    delivery_task().apply_async(task_args(ref), **options)


def publish_as(ref: MessageRef, task_id: str) -> None:
    """Queue a delivery as the task its record names (a reaper's claim, a promotion)."""
    publish(ref, task_id=task_id)


def publish_ahead(ref: MessageRef, task_id: str) -> None:
    """:func:`publish_as`, at the head of the queue on the Redis broker (a recovered attempt)."""
    publish(ref, task_id=task_id, headers={AHEAD_HEADER: True})


def make_reaper(store: StatusStore) -> Reaper:
    settings = get_settings()
    bell = worker_doorbell() if settings.delivery_batch else None
    return Reaper(
        store.recovery,
        publish_as,
        interval=settings.reaper_interval,
        requeue_delay=max(settings.lease_seconds, 10),
        # The queue list lives in the status store's Redis only when that is the broker.
        queue_key=settings.queue if broker_is_store(settings) and not bell else None,
        lane=bell.lane if bell else None,
        ring_stalled=(lambda: bell.ring_if_stalled(store)) if bell else None,
        heartbeat=getattr(get_app(), "dispatcher_heartbeat", None),
        publish_ahead=publish_ahead,
    )


def _configure_worker_logging(loglevel: Any = None, **_: Any) -> None:
    # Our format for every line the worker writes, Celery's own included.
    settings = get_settings()
    configure_logging(loglevel or settings.log_level, settings.log_format)


def _bound_attempts(sender: Any = None, **_: Any) -> None:
    # The pool as the worker runs it (its command line wins over the settings).
    pool = get_implementation(getattr(sender, "pool_cls", None) or get_settings().worker_pool)
    concurrency = getattr(sender, "concurrency", None)
    ring.set_capacity(pool.__module__, concurrency if isinstance(concurrency, int) else 0)


def _check_redis(sender: Any = None, **_: Any) -> None:
    warn_redis_configuration(consumer_store().redis, "worker")


def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    # Every process that takes leases beats: the main process (threads or solo pool, and the
    # reaper's own watch) and each prefork child, so a dead holder's leases are broken within
    # the worker timeout (dispatcher/store/liveness.py).
    get_app().dispatcher_heartbeat = Heartbeat(delivery_task().store.liveness).start()


def _start_reaper(sender: Any = None, **_: Any) -> None:
    # Every worker runs one; claims are atomic, so several never publish an id twice.
    if get_settings().reaper_interval > 0:
        get_app().dispatcher_reaper = make_reaper(delivery_task().store).start()


def _flush_durations(sender: Any = None, **_: Any) -> None:
    # The attempt durations this process counted since its last flush (once a second).
    task = delivery_task()
    if "store" in vars(task):  # built here: this process ran deliveries
        task.store.lease.durations.flush()


def _stop_reaper(sender: Any = None, **_: Any) -> None:
    for name in ("dispatcher_reaper", "dispatcher_webhook_pump"):
        loop = getattr(get_app(), name, None)
        if loop is not None:
            loop.stop()


def make_scheduler(store: StatusStore) -> Scheduler:
    return Scheduler(
        store.schedule,
        DirectEnqueue(get_app(), get_settings().queue, enabled=broker_is_store(get_settings())),
        publish_as,
        interval=get_settings().scheduler_interval,
        bell=worker_doorbell() if get_settings().delivery_batch else None,
    )


def _start_scheduler(sender: Any = None, **_: Any) -> None:
    # Every worker runs one, leaderless: a promotion claims each message atomically.
    if get_settings().scheduler_interval > 0:
        get_app().dispatcher_scheduler = make_scheduler(delivery_task().store).start()


def _freeze_heap(sender: Any = None, **_: Any) -> None:
    # Everything built at start-up (modules, the app, pools) lives as long as the process:
    # out of the collector's generations, a full collection no longer walks it on the
    # delivery path (docs/architecture.md, "Costs").
    gc.freeze()


def _stop_scheduler(sender: Any = None, **_: Any) -> None:
    scheduler = getattr(get_app(), "dispatcher_scheduler", None)
    if scheduler is not None:
        scheduler.stop()


def _start_webhook_pump(sender: Any = None, **_: Any) -> None:
    # Every worker runs one, like the reaper: fan-out and claims are atomic.
    settings = get_settings()
    subscriptions = settings.webhook_subscriptions()
    if not subscriptions.endpoints:
        return
    task = get_app().tasks[WEBHOOK_TASK]
    get_app().dispatcher_webhook_pump = WebhookPump(
        WebhookStore(delivery_task().store.redis, dead_ttl=settings.status_ttl),
        subscriptions,
        lambda batch: task.apply_async((batch, time.time()), queue=settings.webhook_queue),
        interval=settings.webhook_poll_interval,
        claim_seconds=settings.webhook_claim_seconds,
        per_task=settings.webhook_batch,
    ).start()
