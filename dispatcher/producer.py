"""The Python producer API: ``Dispatcher.from_env().submit({...})``.

Submit = validate -> size check -> record ``queued`` -> publish. When the
broker is the status store's Redis (the default) both are one Lua call: the
record and the Celery task message pushed onto the queue list, or neither
(dispatcher/enqueue.py builds the message). With another broker the record is
written first so a worker always finds it; if the publish fails the record is
removed again, so a rejected submission leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import KombuError, OperationalError
from pydantic import BaseModel, Field
from redis.asyncio import Redis as AsyncRedis

from dispatcher.channels import pick_channel
from dispatcher.channels.easemob import check_size
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS, redis_client
from dispatcher.enqueue import TaskMessageTemplate
from dispatcher.errors import Conflict, RateLimited, Unauthorized, Unavailable
from dispatcher.gate import REPLAYED, Gate
from dispatcher.health import RedisHealth
from dispatcher.ids import new_message_id
from dispatcher.models import LastError, Message, StatusRecord, parse_message
from dispatcher.status import CreateCall, CreateOutcome, StatusStore
from dispatcher.worker import DELIVER_TASK, make_celery

log = logging.getLogger(__name__)

PUBLISH_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    KombuError,
    ConnectionError,
    OSError,
    *REDIS_ERRORS,
)


class DeadLetter(BaseModel):
    getMessageId: str
    diedAt: float = Field(description="unix seconds")
    lastError: LastError | None


@dataclass(frozen=True)
class Submitted:
    message_id: str
    created: bool
    """False when the same id and content were already accepted (nothing new queued)."""


class Dispatcher:
    """Submit messages and read their status."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis | None = None,
        celery: Celery | None = None,
    ) -> None:
        self.settings = settings
        self.redis = client or redis_client(settings)
        self.store = StatusStore.from_settings(self.redis, settings)
        self.celery = celery or make_celery(settings)
        # Warns once about an unsafe Redis; refuses new work while Redis memory is nearly full.
        self.health = RedisHealth.from_settings(self.redis, settings)
        # The broker is this Redis: queue the task in the script that records ``queued``.
        self._enqueue_direct = settings.broker_url in (None, settings.redis_url) and (
            self.celery.conf.broker_url == settings.redis_url
        )
        self._template: TaskMessageTemplate | None = None

    @classmethod
    def from_env(cls) -> Dispatcher:
        return cls(Settings())

    def validate(self, payload: Any) -> Message:
        """Parse and check a request body without queuing it (raises InvalidMessage)."""
        message = parse_message(payload, media_domain=self.settings.qiniu_domain)
        check_size(
            message.getMessageId or new_message_id(self.settings.id_prefix),
            message,
            self.settings.easemob_max_body_bytes,
        )
        return message

    def submit(self, payload: Any, *, client: str | None = None) -> str:
        """Validate and queue a message; returns its getMessageId.

        Raises InvalidMessage (every broken field named), Conflict (id reused
        for other content) or Unavailable (Redis/broker down; nothing kept).
        """
        return self.submit_message(self.validate(payload), client=client).message_id

    def submit_message(
        self, message: Message, *, client: str | None = None, gate: Gate | None = None
    ) -> Submitted:
        """Queue a validated message. With ``gate`` (the HTTP API) the submit also passes its
        client's rate and its nonce's replay guard in the same Redis call (dispatcher/gate.py)."""
        self.health.admit()
        message_id, call, publish = self._prepare(message, client, gate)
        with _unavailable("status store"):
            outcome = self.store.run_create(call)
        if outcome == "created" and publish:
            self._publish_or_forget(message_id, message)
        return self._settle(message_id, message, outcome, gate)

    async def submit_message_async(
        self,
        connection: AsyncRedis,
        message: Message,
        *,
        client: str | None = None,
        gate: Gate | None = None,
    ) -> Submitted:
        """:meth:`submit_message` for an event loop: the record is written through
        ``connection`` (an asyncio client of the same Redis); the rare blocking steps (the
        memory check every few seconds, a publish to a broker other than this Redis) run
        in a thread."""
        if self.health.needs_redis():
            await asyncio.to_thread(self.health.admit)
        else:
            self.health.admit()
        message_id, call, publish = self._prepare(message, client, gate)
        with _unavailable("status store"):
            outcome = await self.store.run_create_async(connection, call)
        if outcome == "created" and publish:
            await asyncio.to_thread(self._publish_or_forget, message_id, message)
        return self._settle(message_id, message, outcome, gate)

    def _prepare(
        self, message: Message, client: str | None, gate: Gate | None
    ) -> tuple[str, CreateCall, bool]:
        """The id, the create call, and whether the task still has to be published after it
        (a broker other than this Redis: the script records but cannot push)."""
        message_id = message.getMessageId or new_message_id(self.settings.id_prefix)
        enqueue = self._queue_message(message_id)
        call = self.store.create_call(
            message_id,
            message,
            channel=pick_channel(message),
            client=client,
            enqueue=enqueue,
            gate=gate,
        )
        return message_id, call, enqueue is None

    def _publish_or_forget(self, message_id: str, message: Message) -> None:
        """Publish the recorded message; if the broker refuses, remove the record again."""
        try:
            self.publish(message_id)
        except PUBLISH_ERRORS as exc:
            self._forget(message_id, message)
            raise Unavailable(f"broker unavailable: {_reason(exc)}") from None

    def _settle(
        self, message_id: str, message: Message, outcome: CreateOutcome, gate: Gate | None
    ) -> Submitted:
        """The answer to a submit once the store has spoken (raises for every refusal)."""
        if outcome == "created":
            log.info(
                "getMessageId=%s queued type=%d to=%s", message_id, message.messageType, message.to
            )
            return Submitted(message_id, created=True)
        if outcome == "duplicate":
            log.info(
                "getMessageId=%s resubmitted with the same content: nothing queued", message_id
            )
            return Submitted(message_id, created=False)
        if outcome == "conflict":
            raise Conflict(message_id)
        if outcome == "replayed":
            raise Unauthorized(REPLAYED)
        if outcome.startswith("wait:") and gate is not None:
            raise RateLimited(gate.client, int(outcome[5:]) / 1000)
        raise RuntimeError(f"unexpected answer from the status store: {outcome!r}")

    def publish(self, message_id: str) -> None:
        self.celery.send_task(DELIVER_TASK, args=(message_id,), queue=self.settings.queue)

    def _queue_message(self, message_id: str) -> tuple[str, str] | None:
        """(queue list key, task message) to push with the record; None: publish with kombu."""
        if not self._enqueue_direct:
            return None
        template = self._template
        if template is None or template.pid != os.getpid():  # origin names the process
            try:
                template = TaskMessageTemplate.capture(
                    self.celery, DELIVER_TASK, self.settings.queue
                )
            except ValueError as exc:
                log.warning("publishing through kombu: %s", exc)
                self._enqueue_direct = False
                return None
            self._template = template
        return template.queue_key, template.build(message_id)

    def _forget(self, message_id: str, message: Message) -> None:
        try:
            self.store.discard(message_id, message)
        except REDIS_ERRORS:
            log.error(
                "getMessageId=%s publish failed and the queued record could not be removed; "
                "it will be re-enqueued by recovery",
                message_id,
            )

    def status(self, message_id: str) -> StatusRecord | None:
        with _unavailable("status store"):
            return self.store.get(message_id)

    def status_many(self, message_ids: list[str]) -> list[StatusRecord | None]:
        with _unavailable("status store"):
            return self.store.get_many(message_ids)

    def upload(
        self,
        source: bytes | str | os.PathLike[str],
        key: str | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> str:
        """Upload a local file or bytes to the Qiniu bucket; returns the key to send.

        Resumable above the SDK's 8 MiB threshold. Without ``key`` the key is
        the content hash plus the file's extension, so re-uploading is harmless.
        """
        from dispatcher.media.qiniu import QiniuClient

        with QiniuClient.from_settings(self.settings) as client:
            return client.upload(source, key, progress=progress)

    def replay(self, message_id: str) -> str:
        """Send a dead letter round again; returns the store's verdict (``ok`` when requeued)."""
        verdict = self.store.replay(message_id)
        if verdict == "ok":
            self.publish(message_id)
            log.info("getMessageId=%s replayed from dead letters", message_id)
        return verdict

    def dead_letters(self, limit: int = 100, offset: int = 0) -> list[DeadLetter]:
        """Dead messages, oldest first, with the error that killed them."""
        with _unavailable("status store"):
            entries = self.store.dead_letters(limit=limit, offset=offset)
            records = self.store.get_many([message_id for message_id, _ in entries])
        return [
            DeadLetter(
                getMessageId=message_id,
                diedAt=died,
                lastError=record.lastError if record else None,
            )
            for (message_id, died), record in zip(entries, records, strict=True)
        ]

    def close(self) -> None:
        self.redis.close()


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """Redis errors inside become :class:`Unavailable` naming ``what`` (nothing was kept)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise Unavailable(f"{what} unavailable: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("\n", 1)[0][:200]
