"""How far behind delivery is: each queue's depth and the age of its oldest entry.

With the Redis broker a queue is a list that kombu LPUSHes and workers BRPOP, so the
entry next in line is the tail; it names its message, whose status record says when it
was queued (``updatedAt``: accepted, replayed or last re-enqueued). With another broker
only the depth is known (a passive declare).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from celery import Celery

from dispatcher.enqueue import ref_in
from dispatcher.store import StatusStore


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
