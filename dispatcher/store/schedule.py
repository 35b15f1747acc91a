"""Schedule stage: messages accepted with a later ``sendAt`` wait in a sorted set of our
own (:data:`keys.SCHEDULE`), not in the broker, until their time.

Celery's countdown/ETA would hold each waiting task in a worker's memory and, on
Redis, redeliver one whose ETA is past the visibility timeout again and again
(docs/architecture.md, "Scheduled delivery"). Here a waiting message costs its record
and one sorted-set entry in Redis, and nothing in any worker. Every worker runs a
:class:`Scheduler`; ``lua/promote_due.lua`` claims and queues each due message in one
step, so any number of them run with no leader and none queues a message twice.

The promotion is generic: "a reference that is due becomes a queued delivery task".
Retries may move onto this schedule later (a retry's backoff as a schedule entry)
without a new mechanism.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import redis

from dispatcher import keys
from dispatcher.background import BackgroundLoop
from dispatcher.connections import REDIS_ERRORS, text
from dispatcher.ids import MessageRef
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load

log = logging.getLogger(__name__)

TaskFor = Callable[[MessageRef], tuple[str, str] | None]
"""(queue list key, task message) to push for a message, or None to publish through kombu."""


@dataclass(frozen=True, slots=True)
class DueBatch:
    refs: list[MessageRef]
    """Due now, oldest first."""
    next_in: float | None
    """Seconds until the next later entry (None: nothing else scheduled, or not asked)."""


@dataclass(frozen=True, slots=True)
class Promotion:
    refs: list[MessageRef]
    """Queued by this call (the others were taken by another worker, or cancelled)."""
    pushed: bool
    """Their tasks are on the queue list already; else they still have to be published."""


class ScheduleStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._due = load("due")
        self._promote = load("promote_due")

    def due(self, limit: int) -> DueBatch:
        """Up to ``limit`` references due by Redis's clock, and the wait for the next one."""
        reply = self._due(self.redis, {"schedule": keys.SCHEDULE}, {"limit": limit})
        wait = text(reply[0])
        refs = [MessageRef.parse(text(member)) for member in reply[1:]]
        return DueBatch(refs, int(wait) / 1000 if wait else None)

    def promote(self, refs: list[MessageRef], task_for: TaskFor) -> Promotion:
        """Queue those of ``refs`` still scheduled and due. With tasks from ``task_for``
        they are pushed in the same step; without, the caller publishes the refs returned."""
        queue: str | None = None
        batch: list[str] = []
        for ref in refs:
            enqueue = task_for(ref)
            if enqueue is not None:
                queue = enqueue[0]
            batch += [ref.member, enqueue[1] if enqueue else ""]
        reply = self._promote(
            self.redis,
            {
                "schedule": keys.SCHEDULE,
                "inflight": keys.IN_FLIGHT,
                "stats": keys.STATS,
                "queue": queue,
            },
            {
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "queued_grace_ms": self.policy.queued_grace_ms,
                "key_open": keys.MESSAGE_KEY_PARTS[0],
                "record_close": keys.MESSAGE_KEY_PARTS[1],
                "history_close": keys.MESSAGE_KEY_PARTS[2],
                "batch": batch,
            },
        )
        return Promotion([MessageRef.parse(text(member)) for member in reply], queue is not None)

    def waiting(self) -> int:
        """How many messages wait for their time."""
        return int(self.redis.zcard(keys.SCHEDULE))


@dataclass
class Scheduler(BackgroundLoop):
    """The promotion loop every worker runs: queue what is due, then sleep until the next
    entry's time or ``interval`` seconds, whichever comes first.

    ``publish`` sends a promoted message's task when ``task_for`` gives none (a broker
    other than the store's Redis); if it fails, recovery re-enqueues the ``queued``
    message after the queued grace.
    """

    store: ScheduleStore
    task_for: TaskFor
    publish: Callable[[MessageRef], None]
    interval: float
    batch: int = 500
    min_wait: float = 0.05
    """Shortest sleep between looks: on a dense schedule (an entry every millisecond) each
    look then promotes a batch instead of one message per round trip."""
    thread_name: ClassVar[str] = "dispatcher-scheduler"

    def run_once(self) -> tuple[list[MessageRef], float | None]:
        """Promote one batch of due messages: (those this worker queued, seconds until
        the next entry is due or None)."""
        due = self.store.due(self.batch)
        if not due.refs:
            return [], due.next_in
        promotion = self.store.promote(due.refs, self.task_for)
        for ref in promotion.refs:
            if not promotion.pushed:
                self.publish(ref)
            log.info("getMessageId=%s queued at its scheduled time", ref.id)
        return promotion.refs, 0.0 if len(due.refs) == self.batch else due.next_in

    def run(self) -> None:
        while not self._stop.is_set():
            wait = self.interval
            try:
                _, next_in = self.run_once()
                if next_in == 0:  # a full batch: more is due now
                    continue
                if next_in is not None:
                    wait = min(wait, max(next_in, self.min_wait))
            except REDIS_ERRORS as exc:
                log.warning("scheduler: Redis unavailable (%s); trying again", exc)
            except Exception:
                log.exception("scheduler: unexpected error; trying again")
            if wait > 0:
                self._stop.wait(wait)
