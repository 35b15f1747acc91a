"""Schedule stage: messages that wait for a time wait in a sorted set of our own
(each shard's ``schedule``, dispatcher/keys.py), not in the broker: a message accepted with a later ``sendAt``
(``scheduled``), and a retry until its backoff has run out (``retrying``).

Celery's countdown/ETA would hold each waiting task in a worker's memory and, on
Redis, redeliver one whose ETA is past the visibility timeout again and again
(docs/architecture.md, "Scheduled delivery"). Here a waiting message costs its record
and one sorted-set entry in Redis, and nothing in any worker. The script that records a
retry (``lua/finish.lua``) adds its entry in the same step, so a worker lost right after
loses nothing. Every worker runs a :class:`Scheduler`; ``lua/promote_due.lua`` claims
and queues each due message in one step, so any number of them run with no leader and
none queues a message twice. The promotion is generic, "a due reference becomes a
queued delivery task": it publishes the task the record names (a retry's, recorded by
the retry) or records a new one, so copies of older tasks stand down
(docs/reliability.md, "The state machine").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import redis

from dispatcher import keys
from dispatcher.background import BackgroundLoop
from dispatcher.connections import REDIS_ERRORS, text
from dispatcher.enqueue import new_task_id
from dispatcher.ids import MessageRef
from dispatcher.store.pending import RING_MS, Bell
from dispatcher.store.policy import StorePolicy
from dispatcher.store.read import sum_over_shards
from dispatcher.store.scripts import load

log = logging.getLogger(__name__)


class TaskFor(Protocol):
    def __call__(self, ref: MessageRef, *, task_id: str) -> tuple[str, str] | None:
        """(queue list key, task message) to push for a message's task ``task_id``, or None
        to publish through kombu."""
        ...


@dataclass(frozen=True, slots=True)
class DueBatch:
    refs: list[MessageRef]
    """Due now, oldest first."""
    next_in: float | None
    """Seconds until the next later entry (None: nothing else scheduled, or not asked)."""
    task_ids: list[str | None]
    """Per ref, the task its record names (a retry's), or None (a scheduled send's)."""


@dataclass(frozen=True, slots=True)
class Promotion:
    refs: list[MessageRef]
    """Queued by this call (the others were taken by another worker, or cancelled)."""
    task_ids: list[str]
    """Per ref, the id of its task: the message's live task from now on."""
    pushed: bool
    """Their tasks are on the queue list already (or they wait on a lane's pending list);
    else they still have to be published."""
    ring: bool = False
    """They wait on a lane whose ring the caller publishes (a broker other than this Redis)."""


class ScheduleStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._due = load("due")
        self._promote = load("promote_due")

    def due(self, limit: int) -> DueBatch:
        """Up to ``limit`` references due by Redis's clock in each shard, and the wait for
        the next one of any shard."""
        batch = DueBatch([], None, [])
        waits: list[float] = []
        for shard in keys.shards():
            key_open, record_close, _ = shard.key_parts
            reply = self._due(
                self.redis,
                {"schedule": shard.schedule},
                {"limit": limit, "key_open": key_open, "record_close": record_close},
            )
            wait = text(reply[0])
            if wait:
                waits.append(int(wait) / 1000)
            batch.refs.extend(MessageRef.parse(text(member)) for member in reply[1::2])
            batch.task_ids.extend(text(task) or None for task in reply[2::2])
        return DueBatch(batch.refs, min(waits, default=None), batch.task_ids)

    def promote(
        self,
        refs: list[MessageRef],
        task_for: TaskFor,
        task_ids: list[str | None] | None = None,
        bell: Bell | None = None,
    ) -> Promotion:
        """Queue those of ``refs`` still waiting and due, each under the task id its record
        names (``task_ids``, as :meth:`due` read them) or a new one. With ``bell`` they go
        onto its lane's pending list (the doorbell, :mod:`.pending`); else with tasks from
        ``task_for`` they are pushed in the same step; without, the caller publishes the
        refs returned under their task ids. One call per shard the refs belong to."""
        queue: str | None = None
        batches: dict[keys.Shard, list[str]] = {}
        ids: dict[str, str] = {}
        ring_task = bell.ring_task() if bell else None
        if bell and ring_task is not None:
            queue = bell.lane.queue
        for ref, recorded in zip(refs, task_ids or [None] * len(refs), strict=True):
            task_id = recorded or new_task_id()
            ids[ref.member] = task_id
            enqueue = None if bell else task_for(ref, task_id=task_id)
            if enqueue is not None:
                queue = enqueue[0]
            batch = batches.setdefault(keys.shard_of(ref), [])
            batch += [ref.member, task_id, enqueue[1] if enqueue else ""]
        promoted: list[str] = []
        ring = False
        for shard, batch in batches.items():
            key_open, record_close, history_close = shard.key_parts
            reply = self._promote(
                self.redis,
                {
                    "schedule": shard.schedule,
                    "inflight": shard.inflight,
                    "stats": shard.stats,
                    "queue": queue,
                    "pending": bell.lane.pending if bell else None,
                    "flag": bell.lane.flag if bell else None,
                },
                {
                    "ring_task": ring_task,
                    "ring_ms": RING_MS,
                    "ttl": self.policy.ttl,
                    "history_limit": self.policy.history_limit,
                    "queued_grace_ms": self.policy.queued_grace_ms,
                    "retry_grace_ms": self.policy.retry_grace_ms,
                    "key_open": key_open,
                    "record_close": record_close,
                    "history_close": history_close,
                    "batch": batch,
                },
            )
            promoted += [text(member) for member in reply[0]]
            ring = ring or bool(reply[1])
        return Promotion(
            [MessageRef.parse(member) for member in promoted],
            [ids[member] for member in promoted],
            queue is not None or bell is not None,
            ring,
        )

    def waiting(self) -> int:
        """How many messages wait for their time (scheduled sends and retries)."""
        return sum_over_shards(self.redis, lambda pipe, shard: pipe.zcard(shard.schedule))


@dataclass
class Scheduler(BackgroundLoop):
    """The promotion loop every worker runs: queue what is due, then sleep until the next
    entry's time or ``interval`` seconds, whichever comes first.

    ``publish`` sends a promoted message's task (under the task id given) when
    ``task_for`` gives none (a broker other than the store's Redis); if it fails, recovery
    publishes the message again after the queued (or retry) grace.
    """

    store: ScheduleStore
    task_for: TaskFor
    publish: Callable[[MessageRef, str], None]
    interval: float
    batch: int = 500
    bell: Bell | None = None
    """The doorbell: promoted messages wait on its lane (:mod:`.pending`)."""
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
        promotion = self.store.promote(due.refs, self.task_for, due.task_ids, self.bell)
        if promotion.ring and self.bell is not None:
            ring_promoted(self.bell)
        retries = {ref for ref, task_id in zip(due.refs, due.task_ids, strict=True) if task_id}
        for ref, task_id in zip(promotion.refs, promotion.task_ids, strict=True):
            if not promotion.pushed:
                self.publish(ref, task_id)
            if ref in retries:  # the attempts before and after it log in the message's trace
                log.debug("getMessageId=%s retry due: queued as task %s", ref.id, task_id)
            else:
                log.info("getMessageId=%s queued at its scheduled time", ref.id)
        return promotion.refs, 0.0 if len(due.refs) >= self.batch else due.next_in

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


def ring_promoted(bell: Bell) -> None:
    """Publish the ring of promoted messages; if the broker refuses, they wait on the
    pending list until the lane's flag expires and the reaper rings (:mod:`.pending`)."""
    try:
        bell.publish()
    except Exception as exc:  # the broker's errors are many; the reaper covers them all
        log.warning("scheduler: ring not published (%s); recovery rings again", exc)
