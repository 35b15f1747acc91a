"""What :class:`~dispatcher.producer.Dispatcher` reads back: status records, a
multi-recipient message's recipients, dead letters, the stored message, queue backlogs.

A mixin of the producer: it reads through the producer's store, namespace and broker.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from dispatcher.backlog import QueueBacklog, broker_depth, read_backlog, with_pending
from dispatcher.broker import broker_is_store
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS, PoolExhausted
from dispatcher.errors import Busy, NotFound, Unavailable
from dispatcher.ids import MessageRef
from dispatcher.limits import MAX_RECIPIENTS_PAGE
from dispatcher.record import DeadLetter, StatusRecord
from dispatcher.store import StatusStore
from dispatcher.store.recipients import RecipientOutcome, RecipientState

PUBLISH_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    KombuError,
    ConnectionError,
    OSError,
    *REDIS_ERRORS,
)


class StatusReads:
    """The producer's reading methods (every one takes a getMessageId or a reference)."""

    settings: Settings
    namespace: str
    redis: redis.Redis
    store: StatusStore
    celery: Celery

    def ref(self, message: str | MessageRef) -> MessageRef:
        """The reference of a getMessageId in this producer's namespace (a reference as is)."""
        return message if isinstance(message, MessageRef) else MessageRef(self.namespace, message)

    def status(self, message: str | MessageRef) -> StatusRecord | None:
        with unavailable_if_down("status store"):
            return self.store.read.get(self.ref(message))

    def status_many(self, messages: Sequence[str | MessageRef]) -> list[StatusRecord | None]:
        with unavailable_if_down("status store"):
            return self.store.read.get_many([self.ref(m) for m in messages])

    def recipients(
        self, message: str | MessageRef, state: RecipientState | str | None = None
    ) -> Iterator[RecipientOutcome]:
        """Every recipient of a multi-recipient message in the order of its ``to``, only
        those in ``state`` if given, read a page at a time. A generator: NotFound when
        iterated for an unknown id or a message with one recipient."""
        ref, wanted = self.ref(message), None if state is None else RecipientState(state)
        cursor: int | None = 0
        while cursor is not None:
            with unavailable_if_down("status store"):
                page = self.store.recipients.page(
                    ref, state=wanted, cursor=cursor, limit=MAX_RECIPIENTS_PAGE
                )
            if page is None:
                raise NotFound(f"no multi-recipient message {ref.id} in {ref.namespace}")
            yield from page.outcomes
            cursor = page.cursor

    def dead_letters(
        self,
        limit: int = 100,
        offset: int = 0,
        *,
        namespace: str | None = None,
        since: float | None = None,
        until: float | None = None,
        newest_first: bool = False,
    ) -> list[DeadLetter]:
        """Dead messages, oldest (or newest) first, with the error that killed them: every
        namespace's, each naming its client, or only ``namespace``'s; optionally only those
        that died between ``since`` and ``until`` (unix seconds, inclusive)."""
        read = self.store.read
        with unavailable_if_down("status store"):
            entries = read.dead_letters(
                limit, offset, since=since, until=until, newest_first=newest_first,
                namespace=namespace,
            )  # fmt: skip
            records = read.get_many([ref for ref, _ in entries], with_history=False)
        return [
            DeadLetter(
                getMessageId=ref.id,
                diedAt=died,
                lastError=record.lastError if record else None,
                client=ref.namespace,
            )
            for (ref, died), record in zip(entries, records, strict=True)
        ]

    def stored_message(self, message: str | MessageRef) -> dict[str, Any] | None:
        """The message as accepted and recorded (what the worker delivers from)."""
        with unavailable_if_down("status store"):
            stored = self.store.read.stored_message(self.ref(message))
        return None if stored is None else dict(json.loads(stored))

    def queue_backlog(self, queues: list[str] | None = None) -> list[QueueBacklog]:
        """Depth and oldest entry's age of each delivery queue (default: the configured one)."""
        names = queues or [self.settings.queue]
        try:
            with unavailable_if_down("broker"):
                if broker_is_store(self.settings):
                    backlog = read_backlog(self.redis, self.store, names)
                else:
                    backlog = [QueueBacklog(n, broker_depth(self.celery, n), None) for n in names]
                # The doorbell's pending lists hold the waiting messages (backlog.with_pending).
                return (
                    with_pending(self.store, backlog) if self.settings.delivery_batch else backlog
                )
        except PUBLISH_ERRORS as exc:
            raise Unavailable(f"broker unavailable: {reason(exc)}") from None


@contextmanager
def unavailable_if_down(what: str) -> Iterator[None]:
    """Redis errors inside become :class:`Unavailable` naming ``what`` (nothing was kept)."""
    try:
        yield
    except PoolExhausted as exc:
        raise Busy(f"{what} busy: {exc}") from None
    except REDIS_ERRORS as exc:
        raise Unavailable(f"{what} unavailable: {reason(exc)}") from None


def reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("\n", 1)[0][:200]
