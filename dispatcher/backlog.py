"""How far behind delivery is: each queue's depth and the age of its oldest entry.

With the Redis broker a queue is a list that kombu LPUSHes and workers BRPOP, so the
entry next in line is the tail; it names its message, whose status record says when it
was queued (``updatedAt``: accepted, replayed or last re-enqueued). With another broker
only the depth is known (a passive declare). With the doorbell (docs/architecture.md,
"The doorbell") the messages wait on the queue's pending list, which
:func:`with_pending` adds in.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from dispatcher.enqueue import ref_in
from dispatcher.store import PendingLane, StatusStore
from dispatcher.store.pending import entry_ref


@dataclass(frozen=True)
class QueueBacklog:
    """One delivery queue: messages waiting in it, and how long the oldest has waited."""

    queue: str
    depth: int
    oldest_age: float | None
    """Seconds since the next entry's message was queued (None: empty, or not known)."""


def read_backlog(client: redis.Redis, store: StatusStore, queues: list[str]) -> list[QueueBacklog]:
    """Backlog of queue lists in ``client`` (the broker is the status store's Redis)."""
    pipe = client.pipeline(transaction=False)
    for name in queues:
        pipe.llen(name)
        pipe.lindex(name, -1)
    pipe.time()
    *replies, (seconds, micros) = pipe.execute()
    heads = [ref_in(replies[2 * i + 1]) for i in range(len(queues))]
    known = [head for head in heads if head]
    records = store.read.get_many(known, with_history=False)
    queued_at = {
        ref: r.updatedAt.timestamp() for ref, r in zip(known, records, strict=True) if r is not None
    }
    now = seconds + micros / 1e6
    return [
        QueueBacklog(
            name,
            int(replies[2 * i]),
            max(0.0, now - queued_at[head]) if head in queued_at else None,
        )
        for i, (name, head) in enumerate(zip(queues, heads, strict=True))
    ]


def broker_depth(celery: Celery, queue: str) -> int:
    """Messages waiting in ``queue`` of any broker kombu speaks (a passive declare; 0 for a
    queue the broker does not know yet)."""
    with celery.connection_for_read() as connection:
        channel = connection.channel()
        try:
            declared = channel.queue_declare(queue=queue, passive=True)
        except connection.channel_errors:
            return 0  # RabbitMQ: 404, no such queue (and the channel is closed)
        channel.close()
    return int(declared.message_count)


def with_pending(store: StatusStore, backlogs: list[QueueBacklog]) -> list[QueueBacklog]:
    """``backlogs`` with each queue's doorbell lane in: the depth is the larger of its
    pending entries and the broker queue's (whose entries are mostly rings, a task each,
    not messages: one per lane with the Redis broker, about one per waiting message with
    another); the age is the oldest pending entry's message's when there is one."""
    lanes = [PendingLane(b.queue) for b in backlogs]
    pipe = store.redis.pipeline(transaction=False)
    for lane in lanes:
        pipe.llen(lane.pending)
        pipe.lindex(lane.pending, -1)
    pipe.time()
    *replies, (seconds, micros) = pipe.execute()
    heads = [None if h is None else entry_ref(h) for h in replies[1::2]]
    known = [head for head in heads if head]
    records = store.read.get_many(known, with_history=False)
    queued_at = {
        ref: r.updatedAt.timestamp() for ref, r in zip(known, records, strict=True) if r is not None
    }
    now = seconds + micros / 1e6
    out: list[QueueBacklog] = []
    for i, (backlog, head) in enumerate(zip(backlogs, heads, strict=True)):
        depth = max(int(replies[2 * i]), backlog.depth)
        age = max(0.0, now - queued_at[head]) if head in queued_at else backlog.oldest_age
        out.append(QueueBacklog(backlog.queue, depth, age))
    return out
