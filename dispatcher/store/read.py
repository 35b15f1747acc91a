"""Read stage: status records, the dead-letter index and the fleet's counters.

Plain reads (pipelined, no scripts): nothing here changes a record. The fleet's counters
and indexes are read from every shard (dispatcher/keys.py) and summed or merged.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from typing import Any

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from dispatcher.priority import DEFAULT_PRIORITY
from dispatcher.record import (
    HistoryEntry,
    LastError,
    RecipientCountsView,
    State,
    StatusRecord,
    from_millis,
)
from dispatcher.store.recipients import counts_of

_RECORD_FIELDS = (
    "state",
    "type",
    "from",
    "to",
    "targetType",
    "channel",
    "app",
    "priority",
    "client",
    "attempts",
    "createdAt",
    "updatedAt",
    "scheduledFor",
    "deliveredAt",
    "readAt",
    "providerMessageId",
    "lastError",
    "recipients",
    "rcptDelivered",
    "rcptFailed",
)


def over_shards(client: redis.Redis, read: Callable[[Any, keys.Shard], Any]) -> list[Any]:
    """``read(pipe, shard)`` queued for every shard in one pipeline; the replies in order."""
    pipe = client.pipeline(transaction=False)
    for shard in keys.shards():
        read(pipe, shard)
    return list(pipe.execute())


def sum_over_shards(client: redis.Redis, read: Callable[[Any, keys.Shard], Any]) -> int:
    """The sum of one number read from every shard (a ZCARD, say)."""
    return sum(int(n) for n in over_shards(client, read))


def sum_counters(hashes: list[dict[Any, Any]]) -> dict[str, int]:
    """Every shard's counters hash (HGETALL replies), summed field by field."""
    total: dict[str, int] = {}
    for raw in hashes:
        for k, v in raw.items():
            total[text(k)] = total.get(text(k), 0) + int(v)
    return total


class ReadStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def get(self, ref: MessageRef) -> StatusRecord | None:
        return self.get_many([ref])[0]

    def get_many(
        self, refs: list[MessageRef], *, with_history: bool = True
    ) -> list[StatusRecord | None]:
        """The records in the order asked (None for unknown ones), in one round trip;
        without their history lists when ``with_history`` is false."""
        if not refs:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for ref in refs:
            pipe.hmget(keys.message(ref), _RECORD_FIELDS)
            if with_history:
                pipe.lrange(keys.history(ref), 0, -1)
        replies = pipe.execute()
        step = 2 if with_history else 1
        return [
            _record(ref, replies[step * i], replies[step * i + 1] if with_history else [])
            for i, ref in enumerate(refs)
        ]

    def stored_message(self, ref: MessageRef) -> str | None:
        """The message as recorded at submit (:meth:`dispatcher.models.Message.stored`)."""
        raw = self.redis.hget(keys.message(ref), "message")
        return None if raw is None else text(raw)

    def traceparent(self, ref: MessageRef) -> str | None:
        """The trace the message's submit began (dispatcher/tracing.py), if it was traced."""
        raw = self.redis.hget(keys.message(ref), "traceparent")
        return None if raw is None else text(raw)

    def stats(self) -> dict[str, int]:
        """Counters kept by the transition scripts: ``state:<state>``, ``latency:*``, ..."""
        return sum_counters(over_shards(self.redis, lambda pipe, s: pipe.hgetall(s.stats)))

    def in_flight(self) -> int:
        """How many messages are not yet terminal."""
        return sum_over_shards(self.redis, lambda pipe, shard: pipe.zcard(shard.inflight))

    def dead_letters(
        self,
        limit: int = 100,
        offset: int = 0,
        *,
        since: float | None = None,
        until: float | None = None,
        newest_first: bool = False,
        namespace: str | None = None,
    ) -> list[tuple[MessageRef, float]]:
        """Dead messages with the time they died (unix seconds), oldest first (or newest
        first), optionally only those that died between ``since`` and ``until`` (inclusive),
        of every namespace or only of ``namespace``."""
        low = "-inf" if since is None else int(since * 1000)
        high = "+inf" if until is None else int(until * 1000)
        if namespace is not None:
            return self._dead_letters_of(namespace, low, high, newest_first)[
                offset : offset + limit
            ]
        # Each shard's first offset + limit, merged in time order: the page of the whole.
        want = offset + limit
        if newest_first:
            shards = over_shards(
                self.redis,
                lambda pipe, s: pipe.zrevrangebyscore(
                    s.dead, high, low, start=0, num=want, withscores=True
                ),
            )
        else:
            shards = over_shards(
                self.redis,
                lambda pipe, s: pipe.zrangebyscore(
                    s.dead, low, high, start=0, num=want, withscores=True
                ),
            )
        merged = heapq.merge(
            *([(score, text(member)) for member, score in rows] for rows in shards),
            reverse=newest_first,
        )
        rows = list(merged)[offset:want]
        return [(MessageRef.parse(member), float(score) / 1000) for score, member in rows]

    def _dead_letters_of(
        self, namespace: str, low: int | str, high: int | str, newest_first: bool
    ) -> list[tuple[MessageRef, float]]:
        """One namespace's dead letters in time order. Each shard's index is shared by every
        namespace: ZSCAN makes Redis pick the namespace's members, so only they travel."""
        low_ms = float(low) if low != "-inf" else float("-inf")
        high_ms = float(high) if high != "+inf" else float("inf")
        # Namespaces hold no glob characters (NAMESPACE_PATTERN); a bare id (a message
        # recorded before namespaces) belongs to the default one, so that one reads all.
        match = None if namespace == DEFAULT_NAMESPACE else f"{namespace}:*"
        rows = sorted(
            (score, text(member))
            for shard in keys.shards()
            for member, score in self.redis.zscan_iter(shard.dead, match=match, count=1000)
            if low_ms <= score <= high_ms
        )
        if newest_first:
            rows.reverse()
        refs = ((MessageRef.parse(member), score / 1000) for score, member in rows)
        return [(ref, died) for ref, died in refs if ref.namespace == namespace]

    def dead_letter_count(self) -> int:
        return sum_over_shards(self.redis, lambda pipe, shard: pipe.zcard(shard.dead))


def _record(ref: MessageRef, values: list[Any], history: list[Any]) -> StatusRecord | None:
    fields = dict(
        zip(_RECORD_FIELDS, (None if v is None else text(v) for v in values), strict=True)
    )
    if fields["state"] is None:
        return None
    last_error = fields["lastError"]
    entries = []
    if fields["state"] == State.SCHEDULED and not history:
        # A waiting message has no history list yet (lua/create.lua): its one entry.
        history = [json.dumps({"state": "scheduled", "at": fields["createdAt"]})]
    for raw in history:
        entry = json.loads(text(raw))
        entries.append(
            HistoryEntry(
                state=entry["state"], at=from_millis(entry["at"]), detail=entry.get("detail")
            )
        )
    return StatusRecord(
        getMessageId=ref.id,
        state=State(fields["state"]),
        messageType=int(fields["type"] or 0),
        sender=fields["from"] or "",
        to=fields["to"],
        recipients=_counts(fields),
        targetType=fields["targetType"] or "users",
        channel=fields["channel"] or "",
        app=fields["app"],
        priority=fields["priority"] or DEFAULT_PRIORITY,
        client=fields["client"],
        attempts=int(fields["attempts"] or 0),
        createdAt=from_millis(fields["createdAt"]),
        updatedAt=from_millis(fields["updatedAt"]),
        scheduledFor=from_millis(fields["scheduledFor"]),
        deliveredAt=from_millis(fields["deliveredAt"]),
        readAt=from_millis(fields["readAt"]),
        providerMessageId=fields["providerMessageId"],
        lastError=LastError.model_validate_json(last_error) if last_error else None,
        history=entries,
    )


def _counts(fields: dict[str, str | None]) -> RecipientCountsView | None:
    counts = counts_of(fields["recipients"], fields["rcptDelivered"], fields["rcptFailed"])
    return None if counts is None else RecipientCountsView(**counts.public())
