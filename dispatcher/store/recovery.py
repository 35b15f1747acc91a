"""Recovery stage: re-publish messages whose attempt, retry or queue entry was lost.

The broker gives a dead worker's tasks back (RabbitMQ when its connection closes, the
Redis broker after the visibility timeout), but a copy finds the dead attempt's lease
still running and stands down. The store knows better: every non-terminal message not
waiting in the schedule has a deadline in the in-flight index (a lease's next look, one
worker timeout ahead, or its end; a due retry's promotion or queued time plus grace), and
a lease whose holder stopped beating is broken (dispatcher/store/liveness.py). The :class:`Reaper` claims the overdue ones
atomically (``lua/claim_overdue.lua``), publishes each and un-claims what it
could not publish (``lua/unclaim.lua``); the new attempt takes over the expired
lease, and a message that lost its lease too often is dead-lettered as poison.
Operators replay dead letters; queue messages that no record can hold, and
records that expired before their message ended, leave a bounded trace
(docs/reliability.md, "Recovery").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, NamedTuple

import redis

from dispatcher import keys
from dispatcher.background import BackgroundLoop
from dispatcher.connections import REDIS_ERRORS, text
from dispatcher.enqueue import new_task_id, ref_in
from dispatcher.ids import MessageRef
from dispatcher.store.liveness import Heartbeat
from dispatcher.store.pending import PendingLane, entry_ref
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load, operation_id

log = logging.getLogger(__name__)


class ReplayOutcome(StrEnum):
    """What the store said to a replay; anything but ``OK`` changed nothing."""

    OK = "ok"
    MISSING = "missing"
    SCHEDULED = "state:scheduled"
    QUEUED = "state:queued"
    PROCESSING = "state:processing"
    RETRYING = "state:retrying"
    DELIVERED = "state:delivered"
    FAILED = "state:failed"
    CANCELLED = "state:cancelled"
    RECALLED = "state:recalled"


class DiscardOutcome(StrEnum):
    """What the store said to discarding a dead letter; anything but ``OK`` changed nothing."""

    OK = "ok"
    MISSING = "missing"
    NOT_LISTED = "not_listed"
    SCHEDULED = "state:scheduled"
    QUEUED = "state:queued"
    PROCESSING = "state:processing"
    RETRYING = "state:retrying"
    DELIVERED = "state:delivered"
    FAILED = "state:failed"
    CANCELLED = "state:cancelled"
    RECALLED = "state:recalled"


class Overdue(NamedTuple):
    """One claim: the messages to publish again, how many overdue members it looked at (as
    many as asked: there may be more), the id each one's task must carry, and which of them
    lost a lease (an attempt was running: their tasks go ahead of the queue)."""

    refs: list[MessageRef]
    scanned: int
    task_ids: list[str]
    lost_leases: frozenset[MessageRef] = frozenset()


class RecoveryStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._claim = load("claim_overdue")
        self._unclaim = load("unclaim")
        self._replay = load("replay")
        self._discard_dead = load("discard_dead")

    def claim_overdue(
        self,
        limit: int = 500,
        requeue_delay: float = 30.0,
        queue_key: str | None = None,
        watching_since: int | None = None,
        lane: PendingLane | None = None,
    ) -> Overdue:
        """Messages to re-publish: lease expired, retry never ran, or queue entry lost.

        Looks at up to ``limit`` overdue members; each claimed deadline moves ahead, so
        concurrent reapers never publish the same message twice: ``requeue_delay``
        after an expired lease, and doubling each time for a queued or retrying message
        until its next lease. One that lost its lease more than ``max_requeues`` times is
        dead-lettered instead (a poison message: it keeps losing its worker); waiting
        never makes a message poison. With ``queue_key`` (the broker's queue list, when
        the broker is this Redis) a queued message behind the head of that queue is left
        alone (its entry is still ahead of it), and one ahead of the head is published
        again: its entry is gone. A running lease whose holder's process stopped beating
        is broken and claimed like an expired one, when the caller's own process has beaten
        without a gap since ``watching_since`` (ms, Redis's clock) for half a worker timeout
        or more (dispatcher/store/liveness.py); with None no holder is judged dead.
        With ``lane`` (the doorbell) the head is its pending list's instead.

        Every shard is looked at (one call each), up to ``limit`` members in each;
        ``scanned`` counts them all, so it reaches ``limit`` when some shard's look was full
        and the caller calls again.
        """
        if lane is not None:
            since = self._pending_head_queued_at(lane)
        elif queue_key is not None:
            since = self._head_queued_at(queue_key)
        else:
            since = None
        found = Overdue([], 0, [])
        for shard in keys.shards():
            one = self._claim_shard(shard, limit, requeue_delay, since, watching_since)
            found.refs.extend(one.refs)
            found.task_ids.extend(one.task_ids)
            found = found._replace(
                scanned=found.scanned + one.scanned, lost_leases=found.lost_leases | one.lost_leases
            )
        return found

    def _claim_shard(
        self,
        shard: keys.Shard,
        limit: int,
        requeue_delay: float,
        since: int | None,
        watching_since: int | None,
    ) -> Overdue:
        key_open, record_close, history_close = shard.key_parts
        claimed, scanned, task_ids, lost_leases = self._claim(
            self.redis,
            {
                "inflight": shard.inflight,
                "dead": shard.dead,
                "stats": shard.stats,
                "rejected": shard.rejected,
                "outbox": shard.outbox,
                "beats": shard.beats,
            },
            {
                "scan": limit,
                "requeue_delay_ms": int(requeue_delay * 1000),
                "max_requeues": self.policy.max_requeues,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "key_open": key_open,
                "record_close": record_close,
                "history_close": history_close,
                "dead_cap": keys.MAX_DEAD_LETTERS,
                "rejected_cap": keys.MAX_REJECTED,
                "dead_announced": self.policy.clients_announcing("message.dead"),
                "worker_timeout_ms": self.policy.worker_timeout_ms,
                "backlog_since_ms": since,
                "watching_since_ms": watching_since,
            },
        )
        return Overdue(
            [MessageRef.parse(text(member)) for member in claimed],
            int(scanned),
            [text(task_id) for task_id in task_ids],
            frozenset(MessageRef.parse(text(member)) for member in lost_leases),
        )

    def _head_queued_at(self, queue_key: str) -> int | None:
        """When the message next in line in ``queue_key`` was queued (ms on Redis's clock);
        None when the queue is empty, 0 when the head tells nothing (not a queued task)."""
        head = self.redis.lindex(queue_key, -1)
        if head is None:
            return None
        return self._queued_at(ref_in(head))

    def _pending_head_queued_at(self, lane: PendingLane) -> int | None:
        """:meth:`_head_queued_at` of the message next in line on ``lane``."""
        head = self.redis.lindex(lane.pending, -1)
        return None if head is None else self._queued_at(entry_ref(head))

    def _queued_at(self, ref: MessageRef | None) -> int:
        """When ``ref`` was queued, if it is (ms on Redis's clock); else 0."""
        if ref is None:
            return 0
        state, queued_at = self.redis.hmget(keys.message(ref), ["state", "updatedAt"])
        if state is None or text(state) != "queued" or queued_at is None:
            return 0
        return int(text(queued_at))

    def unclaim(self, refs: list[MessageRef], detail: str) -> None:
        """Make claimed messages due again now: their publish failed (``detail`` says why)."""
        by_shard: dict[keys.Shard, list[str]] = {}
        for ref in refs:
            by_shard.setdefault(keys.shard_of(ref), []).append(ref.member)
        for shard, members in by_shard.items():
            key_open, record_close, history_close = shard.key_parts
            self._unclaim(
                self.redis,
                {"inflight": shard.inflight},
                {
                    "key_open": key_open,
                    "record_close": record_close,
                    "history_close": history_close,
                    "ttl": self.policy.ttl,
                    "history_limit": self.policy.history_limit,
                    "detail": detail,
                    "members": members,
                },
            )

    def replay(
        self,
        ref: MessageRef,
        detail: str = "replayed from dead letters",
        *,
        publish: Callable[[MessageRef, str], None] | None = None,
    ) -> ReplayOutcome:
        """Send a dead message round again: ``dead`` -> ``queued``, attempts reset. With
        ``publish``, the message's new task is published once the record says so, under
        the id the record names (its live task, docs/reliability.md, "The state machine")."""
        task_id = new_task_id() if publish is not None else None
        reply = self._replay(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "dead": keys.shard_of(ref).dead,
                "inflight": keys.shard_of(ref).inflight,
            },
            {
                "op": operation_id(),
                "task": task_id,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
                "member": ref.member,
                "detail": detail,
                "queued_grace_ms": self.policy.queued_grace_ms,
            },
        )
        outcome = ReplayOutcome(text(reply))
        if outcome is ReplayOutcome.OK and publish is not None and task_id is not None:
            publish(ref, task_id)
        return outcome

    def discard_dead_letter(self, ref: MessageRef, detail: str) -> DiscardOutcome:
        """Take a dead message off the dead-letter index for good (``detail`` goes to its
        history); its record stays until it expires."""
        reply = self._discard_dead(
            self.redis,
            {
                "message": keys.message(ref),
                "history": keys.history(ref),
                "dead": keys.shard_of(ref).dead,
            },
            {
                "member": ref.member,
                "detail": detail,
                "ttl": self.policy.ttl,
                "history_limit": self.policy.history_limit,
            },
        )
        return DiscardOutcome(text(reply))

    def record_rejected(self, reason: str, detail: str, excerpt: str = "") -> None:
        """Keep a trace of a queue message that has no status record to dead-letter.

        One entry in the bounded ``rejected`` list and one ``rejected:<reason>``
        counter in the stats; the caller acks the message so it never loops.
        """
        entry = json.dumps(
            {
                "reason": reason,
                "detail": detail,
                "excerpt": excerpt[:500],
                "at": int(time.time() * 1000),
            },
            ensure_ascii=False,
        )
        shard = keys.counters_shard()
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(shard.rejected, entry)
        pipe.ltrim(shard.rejected, 0, keys.MAX_REJECTED - 1)
        pipe.hincrby(shard.stats, f"rejected:{reason}", 1)
        pipe.execute()


@dataclass
class Reaper(BackgroundLoop):
    """The recovery loop: every ``interval`` seconds, claim and re-publish what is overdue.

    ``requeue_delay``: seconds before a claimed message may be claimed again;
    ``queue_key``: the broker's queue list when it lives in the store's Redis;
    ``heartbeat``: this process's heartbeat, without which no lease holder is judged dead
    (dispatcher/store/liveness.py).
    ``lane`` and ``ring_stalled``: the doorbell's lane, whose pending list is the queue to
    look at, and the check that rings it when messages wait and its ring was lost.
    """

    store: RecoveryStore
    publish: Callable[[MessageRef, str], None]
    """Publish a message's delivery task with the given task id."""
    interval: float
    requeue_delay: float
    batch: int = 500
    queue_key: str | None = None
    heartbeat: Heartbeat | None = None
    publish_ahead: Callable[[MessageRef, str], None] | None = None
    """Publish it ahead of the queue, for a message that lost its lease: it waited its turn
    once already (None: as :attr:`publish`)."""
    lane: PendingLane | None = None
    ring_stalled: Callable[[], object] | None = None
    thread_name: ClassVar[str] = "dispatcher-reaper"

    def run_once(self) -> list[MessageRef]:
        """Claim and re-publish what is overdue now, batch after batch while a batch was
        full; returns what was published. A message whose publish failed is un-claimed
        (due again at the next pass), and the pass ends there."""
        published: list[MessageRef] = []
        if self.ring_stalled is not None:
            self.ring_stalled()
        while not self._stop.is_set():
            overdue = self.store.claim_overdue(
                limit=self.batch,
                requeue_delay=self.requeue_delay,
                queue_key=self.queue_key,
                watching_since=None if self.heartbeat is None else self.heartbeat.watching_since(),
                lane=self.lane,
            )
            failed: list[MessageRef] = []
            error: Exception | None = None
            for ref, task_id in zip(overdue.refs, overdue.task_ids, strict=True):
                publish = self.publish
                if ref in overdue.lost_leases and self.publish_ahead is not None:
                    publish = self.publish_ahead
                try:
                    publish(ref, task_id)
                except Exception as exc:  # the broker refused: the next pass tries again
                    failed.append(ref)
                    error = exc
                    continue
                published.append(ref)
                log.warning(
                    "getMessageId=%s recovered: re-enqueued after its deadline passed", ref.id
                )
            if failed:
                log.warning("reaper: %d re-publishes failed (%s); un-claimed", len(failed), error)
                self.store.unclaim(failed, f"recovery: re-enqueue failed ({type(error).__name__})")
                break
            if overdue.scanned < self.batch:
                break
        return published

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except REDIS_ERRORS as exc:
                log.warning("reaper: Redis unavailable (%s); trying again", exc)
            except Exception:
                log.exception("reaper: unexpected error; trying again")
            self._stop.wait(self.interval)
