"""``DISPATCHER_REDIS_MIN_REPLICAS``: a submit is answered 200 only once that many Redis
replicas hold its record (docs/deployment.md, "Redis Sentinel").

Redis replicates asynchronously: a primary that dies right after a write may take the
write with it, and a failover then promotes a replica without it. With a minimum set,
the submit path runs the create script and then ``WAIT n timeout`` on the same
connection (WAIT counts the replicas that acknowledged that connection's writes). Fewer
than ``n`` within the timeout: 503 with ``Retry-After``, and nothing is promised — the
record may be on the primary and may yet be delivered, so a caller retries with the
same getMessageId (the retry finds the message and waits for the replicas again).

With no minimum (the default) nothing changes: no pinned connection, no extra call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS, SOCKET_TIMEOUT
from dispatcher.errors import NotReplicated
from dispatcher.store import CreateCall, CreateOutcome, CreateResult, SubmitStore
from dispatcher.store.submit_many import CreateReply

_WRITTEN = frozenset({CreateOutcome.CREATED, CreateOutcome.SCHEDULED, CreateOutcome.DUPLICATE})
"""Outcomes whose 200 promises a record (a duplicate's may come from an unconfirmed try)."""

OFFSET_MARK = "dispatcher:replicas"
"""A channel nobody listens to. WAIT waits for the last write of its own connection, and
the script may have written nothing there: a duplicate's record came from another
connection, a re-run after a lost reply answers from the record. A PUBLISH (sent on to
the replicas, changing nothing) just before WAIT makes every write so far count."""


class ReplicaWait:
    """Pins one connection for the create script and confirms its write on replicas."""

    def __init__(self, replicas: int, timeout: float) -> None:
        self.replicas = replicas
        self.timeout_ms = max(1, round(timeout * 1000))

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplicaWait:
        return cls(settings.redis_min_replicas, settings.redis_min_replicas_timeout)

    def create(self, client: redis.Redis, store: SubmitStore, call: CreateCall) -> CreateResult:
        """Run the create script, then :meth:`confirm` on the same connection."""
        with self.pinned(client) as pinned:
            result = store.create(call, pinned)
            self.confirm(pinned, result)
        return result

    async def create_async(
        self, client: AsyncRedis, store: SubmitStore, call: CreateCall
    ) -> CreateResult:
        """:meth:`create` on an asyncio client."""
        async with self.pinned_async(client) as pinned:
            result = await store.create_async(pinned, call)
            await self.confirm_async(pinned, result)
        return result

    @contextmanager
    def pinned(self, client: redis.Redis) -> Iterator[redis.Redis]:
        """``client`` itself, or with a minimum a client on one connection of its pool."""
        if not self.replicas:
            yield client
            return
        single: redis.Redis = client.client()  # type: ignore[no-untyped-call]
        try:
            yield single
        finally:
            single.close()

    @asynccontextmanager
    async def pinned_async(self, client: AsyncRedis) -> AsyncIterator[AsyncRedis]:
        if not self.replicas:
            yield client
            return
        single = client.client()
        try:
            yield single
        finally:
            await single.aclose()

    def confirm(self, pinned: redis.Redis, result: CreateResult) -> None:
        """Raise :class:`NotReplicated` unless enough replicas hold what ``pinned`` wrote."""
        if not self.replicas or result.outcome not in _WRITTEN:
            return
        connection: Any = pinned.connection
        try:
            # On the script's connection, never retried on another: after a failover a new
            # connection reaches a primary that may never have had the record.
            connection.send_packed_command(connection.pack_commands(self.commands))
            connection.read_response()
            acknowledged = int(connection.read_response(timeout=self._read_timeout))
        except REDIS_ERRORS as exc:
            connection.disconnect()
            raise NotReplicated(f"WAIT for {self.replicas} replica(s) failed: {exc}") from None
        self._check(acknowledged)

    async def confirm_async(self, pinned: AsyncRedis, result: CreateResult) -> None:
        """:meth:`confirm` on an asyncio client."""
        if not self.replicas or result.outcome not in _WRITTEN:
            return
        connection: Any = pinned.connection
        try:
            await connection.send_packed_command(connection.pack_commands(self.commands))
            await connection.read_response()
            acknowledged = int(await connection.read_response(timeout=self._read_timeout))
        except REDIS_ERRORS as exc:
            await connection.disconnect()
            raise NotReplicated(f"WAIT for {self.replicas} replica(s) failed: {exc}") from None
        self._check(acknowledged)

    @property
    def commands(self) -> list[tuple[str | int, ...]]:
        """PUBLISH then WAIT, sent together: one round trip (none without a minimum)."""
        if not self.replicas:
            return []
        return [("PUBLISH", OFFSET_MARK, ""), ("WAIT", self.replicas, self.timeout_ms)]

    def confirm_batch(self, replies: list[CreateReply], after: list[Any]) -> list[CreateReply]:
        """A batch's replies (dispatcher/batch.py), each one that would answer 200 turned
        into :class:`NotReplicated` unless ``after`` (the replies to :attr:`commands`, sent
        in the batch's pipeline) says enough replicas acknowledged."""
        if not self.replicas:
            return replies
        acknowledged = after[-1] if after else None
        try:
            self._check(int(acknowledged))  # type: ignore[arg-type]
        except (NotReplicated, TypeError, ValueError):
            refusal = NotReplicated(f"WAIT for {self.replicas} replica(s): {acknowledged!r}")
            return [
                refusal if isinstance(r, CreateResult) and r.outcome in _WRITTEN else r
                for r in replies
            ]
        return replies

    @property
    def _read_timeout(self) -> float:
        return self.timeout_ms / 1000 + SOCKET_TIMEOUT

    def _check(self, acknowledged: int) -> None:
        if acknowledged < self.replicas:
            raise NotReplicated(
                f"{acknowledged} of {self.replicas} Redis replica(s) acknowledged the record "
                f"within {self.timeout_ms} ms"
            )
