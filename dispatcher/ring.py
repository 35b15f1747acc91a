"""The ring task's batch: drain a lane, then run the attempts concurrently
(docs/architecture.md, "The doorbell").

A ring task drains up to ``DISPATCHER_DELIVERY_BATCH`` waiting messages of its lane in
one script, which also leases each of them, and runs their attempts concurrently, one
thread each, every attempt inside its own lease (dispatcher/delivery.py): a slow provider
call holds only its own message. While entries are left the drain rings again before
the attempts start, so a backlog keeps every worker busy; a lone message is drained and
delivered at once.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from dispatcher import delivery, tracing
from dispatcher.channels import Channel
from dispatcher.config import Settings
from dispatcher.doorbell import Doorbell
from dispatcher.store import Lease, StandDown, StatusStore
from dispatcher.store.pending import Ring

log = logging.getLogger(__name__)

_pool: tuple[int, ThreadPoolExecutor] | None = None
_slots: tuple[int, threading.Semaphore] | None = None
_capacity: int | None = None
"""Attempts one process runs at once (:func:`set_capacity`); unset, one batch's."""

THREADED_POOLS = (
    "celery.concurrency.thread",
    "celery.concurrency.gevent",
    "celery.concurrency.eventlet",
)
"""Celery's pools (by module) that run several tasks in one process."""


def set_capacity(pool_module: str, concurrency: int) -> None:
    """Bound the attempts of ring tasks in each worker process to what one task per
    message ran at once: a pool of threads' concurrency; a pool of processes runs one
    task (one batch) per process. Called when the worker starts, before a fork."""
    global _capacity
    _capacity = concurrency if pool_module in THREADED_POOLS and concurrency > 0 else None


def _attempt_pool() -> ThreadPoolExecutor:
    """This process's threads for the attempts of ring tasks (made on first use, after a
    fork). Idle threads are reused; a thread pool of Celery tasks shares them."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        _pool = (os.getpid(), ThreadPoolExecutor(256, thread_name_prefix="dispatcher-attempt"))
    return _pool[1]


def _attempt_slots(batch: int) -> threading.Semaphore:
    global _slots
    if _slots is None or _slots[0] != os.getpid():
        _slots = (os.getpid(), threading.Semaphore(max(_capacity or batch, 1)))
    return _slots[1]


SLOT_WAIT = 0.05
"""Seconds a ring task waits for a free attempt slot before it passes the ring on: a ring
held by a busy process would keep the lane's messages from idle ones."""


def _take_slots(slots: threading.Semaphore, batch: int) -> int:
    """Up to ``batch`` free attempt slots, waiting a little for the first (0: none came)."""
    if not slots.acquire(timeout=SLOT_WAIT):
        return 0
    taken = 1
    while taken < batch and slots.acquire(blocking=False):
        taken += 1
    return taken


def deliver_lane(
    bell: Doorbell,
    *,
    settings: Settings,
    store: StatusStore,
    channels: dict[str, Channel],
    resolve_media: delivery.MediaResolver | None,
) -> list[tuple[str, str]]:
    """Drain and deliver one batch of ``bell``'s lane: (getMessageId, outcome) each. The
    batch is as many as the process has free attempt slots, up to the configured size:
    a process never runs more attempts at once than its pool's concurrency. With no slot
    free the ring is passed on (drained nothing: rung again while entries wait)."""
    batch = max(settings.delivery_batch, 1)
    slots = _attempt_slots(batch)
    taken = _take_slots(slots, batch)
    try:
        owners = [delivery.attempt_owner() for _ in range(taken)]
        with tracing.span(tracing.SPAN_LEASE):
            drained = store.pending.drain(
                bell.lane,
                owners,
                settings.lease_seconds,
                prepay=delivery.lease_prepay(channels),
                ring_task=bell.ring_task(),
            )
    except BaseException:
        for _ in range(taken):
            slots.release()
        raise
    for _ in range(taken - len(drained.grants)):
        slots.release()
    if drained.ring is Ring.PUBLISH:
        try:
            bell.publish()
        except Exception as exc:  # the lane's flag expires and the reaper rings again
            log.warning("ring not published (%s); recovery rings again", exc)

    def run(grant: Lease | StandDown) -> str:
        try:
            return attempt(grant)
        finally:
            slots.release()

    def attempt(grant: Lease | StandDown) -> str:
        traceparent = store.read.traceparent(grant.ref) if tracing.enabled() else None
        attributes = {tracing.MESSAGE_ID: grant.ref.id}
        with tracing.continuing(traceparent, tracing.SPAN_ATTEMPT, attributes):
            outcome = delivery.attempt_granted(
                grant,
                settings=settings,
                store=store,
                channels=channels,
                resolve_media=resolve_media,
            )
            tracing.annotate({tracing.OUTCOME: outcome.state.value})
        return outcome.state.value

    grants = [store.lease.granted(grant) for grant in drained.grants]  # waits counted
    if not grants:
        return []
    others: list[Future[str]] = [_attempt_pool().submit(run, grant) for grant in grants[1:]]
    outcomes = [run(grants[0])] + [future.result() for future in others]
    return [(grant.ref.id, outcome) for grant, outcome in zip(grants, outcomes, strict=True)]
