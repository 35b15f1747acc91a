"""The Python producer API: ``Dispatcher.from_env().submit({...})``.

Submit = validate -> size check -> record ``queued`` -> publish. When the
broker is the status store's Redis (the default) both are one Lua call: the
record and the Celery task message pushed onto the queue list, or neither
(dispatcher/enqueue.py builds the message). With another broker the record is
written first so a worker always finds it; if the publish fails the record is
removed again, so a rejected submission leaves nothing behind; once the broker confirmed
it, it is marked published (an outbox: docs/deployment.md, "RabbitMQ as the broker").
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from redis.asyncio import Redis as AsyncRedis

from dispatcher import errors, tracing
from dispatcher.broker import make_celery, publishes_to_store
from dispatcher.channels import ChannelSpec
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS, redis_client
from dispatcher.doorbell import Doorbell
from dispatcher.enqueue import DELIVER_TASK, DirectEnqueue, task_args
from dispatcher.errors import Conflict, RateLimited, Unauthorized, Unavailable
from dispatcher.gate import REPLAYED, Gate
from dispatcher.health import RedisHealth
from dispatcher.ids import NAMESPACE_PATTERN, MessageRef, new_message_id
from dispatcher.models import Message, parse_message
from dispatcher.priority import check_allowed
from dispatcher.producer_reads import PUBLISH_ERRORS, StatusReads, reason, unavailable_if_down
from dispatcher.redis_budget import outside_budget
from dispatcher.replicas import ReplicaWait
from dispatcher.routing import route, routing_by_client
from dispatcher.scheduling import SendAt, apply_send_at
from dispatcher.store import (
    CreateCall,
    CreateOutcome,
    CreateResult,
    DiscardOutcome,
    ReplayOutcome,
    StatusStore,
)
from dispatcher.store.submit_many import mark_published
from dispatcher.withdraw import CancelResult, RecallResult, Withdrawal

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    message_id: str
    created: bool
    """False when the same id and content were already accepted (nothing new queued)."""


class Dispatcher(StatusReads):
    """Submit messages and read their status, within one namespace of getMessageIds.

    ``namespace`` scopes caller-chosen ids (docs/architecture.md, "Message
    references"); unset, DISPATCHER_PRODUCER_NAMESPACE (in-process producers share
    the default one). Every method that takes a getMessageId also takes a
    :class:`MessageRef`, to address a message of another namespace.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        client: redis.Redis | None = None,
        celery: Celery | None = None,
        namespace: str | None = None,
    ) -> None:
        self.settings = settings
        self.namespace = namespace or settings.producer_namespace
        if not NAMESPACE_PATTERN.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace[:80]!r}: 1..64 of A-Z a-z 0-9 . _ ~ -")
        self.redis = client or redis_client(settings)
        self.store = StatusStore.from_settings(self.redis, settings)
        self.celery = celery or make_celery(settings)
        # Refuses new work while Redis memory is nearly full.
        self.health = RedisHealth.from_settings(self.redis, settings)
        direct = publishes_to_store(self.celery, settings)  # queued by the create script
        self.direct_enqueue = DirectEnqueue(self.celery, settings.queue, enabled=direct)
        self.doorbell = (
            Doorbell(self.celery, settings, direct=direct) if settings.delivery_batch else None
        )
        self.withdrawal = Withdrawal(settings, self.store)
        self.replica_wait = ReplicaWait.from_settings(settings)
        self._routing = routing_by_client(settings)
        self._max_priority = {name: c.max_priority for name, c in settings.clients.items()}
        self.lanes = self.store.lease.durations  # counts by lane, for /metrics (store/lanes.py)

    def route(self, message: Message, client: str | None = None) -> ChannelSpec:
        """The channel the message center picks for ``client``'s message (docs/channels.md);
        InvalidMessage when it cannot carry the message's type."""
        routing = self._routing.get(client, self.settings.routing) if client else None
        decision = route(routing or self.settings.routing, message)
        if decision.hint_ignored:
            log.debug(
                "channelType %s not allowed by the routing of client %r: %s chosen",
                message.channelType,
                client,
                decision.channel.name,
            )
        return decision.channel

    @classmethod
    def from_env(cls) -> Dispatcher:
        return cls(Settings())

    def validate(self, payload: Any, *, client: str | None = None) -> Message:
        """Parse and check a request body without queuing it (raises InvalidMessage; Forbidden
        for a priority above the client's), also against the channel picked for ``client``."""
        message = parse_message(payload, media_domain=self.settings.qiniu_domain)
        apply_send_at(message, None, self.settings.schedule_max_days)
        check_allowed(message.priority, client, self._max_priority)
        channel = self.route(message, client)
        message_id = message.getMessageId or new_message_id(self.settings.id_prefix)
        channel.check_size(self.settings, message_id, message, client)
        return message

    def submit(
        self, payload: Any, *, client: str | None = None, send_at: SendAt | None = None
    ) -> str:
        """Validate and queue a message (at ``send_at``, or the body's sendAt: docs/api.md);
        returns its getMessageId. Raises InvalidMessage (every broken field named), Conflict (id reused
        for other content) or Unavailable (Redis/broker down; nothing kept).
        """
        message = self.validate(payload, client=client)
        apply_send_at(message, send_at, self.settings.schedule_max_days)
        return self.submit_message(message, client=client).message_id

    @tracing.spanned(tracing.SPAN_SUBMIT)
    def submit_message(
        self,
        message: Message,
        *,
        client: str | None = None,
        gate: Gate | None = None,
        namespace: str | None = None,
    ) -> Submitted:
        """Queue a validated message (in ``namespace``, default this producer's). With
        ``gate`` (the HTTP API) the submit also passes its client's rate and its nonce's
        replay guard in the same Redis call (dispatcher/gate.py)."""
        self.health.admit()
        ref, call, publish = self.prepare_create(message, client, gate, namespace)
        with unavailable_if_down("status store"), tracing.span(tracing.SPAN_ENQUEUE):
            result = self.replica_wait.create(self.redis, self.store.submit, call)
        if self.must_publish(publish, result):
            self.publish_or_forget(ref, message)
        return self.settle_create(ref, message, result, gate, call)

    @tracing.spanned_async(tracing.SPAN_SUBMIT)
    async def submit_message_async(
        self,
        connection: AsyncRedis,
        message: Message,
        *,
        client: str | None = None,
        gate: Gate | None = None,
        namespace: str | None = None,
    ) -> Submitted:
        """:meth:`submit_message` for an event loop: the record is written through
        ``connection`` (an asyncio client of the same Redis); the rare blocking steps (the
        memory check every few seconds, a publish to a broker other than this Redis) run
        in a thread."""
        if self.health.needs_redis():
            await asyncio.to_thread(self.health.admit)
        else:
            self.health.admit()
        ref, call, publish = self.prepare_create(message, client, gate, namespace)
        with unavailable_if_down("status store"), tracing.span(tracing.SPAN_ENQUEUE):
            result = await self.replica_wait.create_async(connection, self.store.submit, call)
        if self.must_publish(publish, result):
            await asyncio.to_thread(self.publish_or_forget, ref, message)
        return self.settle_create(ref, message, result, gate, call)

    def submit_many(
        self, payloads: Sequence[Any], *, client: str | None = None
    ) -> list[str | errors.DispatcherError]:
        """Validate and queue 1 to 500 messages in one Redis round trip: one result per
        payload, its getMessageId or what :meth:`submit` would raise (docs/api.md)."""
        from dispatcher import batch

        return batch.submit_payloads(self, payloads, client)

    def prepare_create(
        self, message: Message, client: str | None, gate: Gate | None, namespace: str | None
    ) -> tuple[MessageRef, CreateCall, bool]:
        """The reference, the create call, and whether its task or ring may have to be
        published after it (:meth:`must_publish`: the script records but cannot push)."""
        message_id = message.getMessageId or new_message_id(self.settings.id_prefix)
        ref = MessageRef(namespace or self.namespace, message_id)
        spec = self.route(message, client)
        traceparent = tracing.submitting(ref.id, client, spec.name)
        # With the doorbell the trace travels in the record: a ring carries many messages.
        bell = self.doorbell
        enqueue = bell.enqueue() if bell else self.direct_enqueue(ref, traceparent)
        call = self.store.submit.prepare(
            ref,
            message,
            channel=spec.name,
            app=spec.app_for(self.settings, client) if spec.app_for is not None else None,
            client=client,
            enqueue=enqueue,
            pending=bell.lane if bell else None,
            gate=gate,
            traceparent=traceparent,
            send_at_ms=message.sendAt,
            publish_apart=enqueue is None,
        )
        return ref, call, enqueue is None

    def must_publish(self, publish: bool, result: CreateResult) -> bool:
        """A create recorded a message whose task is ours to publish; with the doorbell its
        ring, every time: the broker's confirmation is what a submit promises."""
        return publish and result.outcome is CreateOutcome.CREATED

    def publish_or_forget(self, ref: MessageRef, message: Message, *, mark: bool = True) -> None:
        """Publish the recorded message (or its ring); if the broker refuses, remove the
        record again; then mark it published (``mark=False``: the caller does, for a batch)."""
        try:
            if self.doorbell is not None:
                self.doorbell.publish()
            else:
                self.publish(ref)
        except PUBLISH_ERRORS as exc:
            self.forget(ref, message)
            raise Unavailable(f"broker unavailable: {reason(exc)}") from None
        if mark:
            mark_published(self.redis, [ref], self.store.policy.queued_grace_ms)

    def settle_create(
        self,
        ref: MessageRef,
        message: Message,
        result: CreateResult,
        gate: Gate | None,
        call: CreateCall,
    ) -> Submitted:
        """The answer to a submit once the store has spoken (raises for every refusal)."""
        outcome = result.outcome
        if outcome in (CreateOutcome.CREATED, CreateOutcome.SCHEDULED):
            self.lanes.add(call.lane.count("accepted"))
            state = "queued" if outcome is CreateOutcome.CREATED else "scheduled"
            log.info(
                "getMessageId=%s %s type=%d to=%s", ref.id, state, message.messageType, message.to
            )
            return Submitted(ref.id, created=True)
        if outcome is CreateOutcome.DUPLICATE:
            log.info("getMessageId=%s resubmitted with the same content: nothing queued", ref.id)
            return Submitted(ref.id, created=False)
        if outcome is CreateOutcome.CONFLICT:
            raise Conflict(ref.id)
        if outcome is CreateOutcome.REPLAYED:
            raise Unauthorized(REPLAYED)
        if gate is None:  # only a gate refuses for the rate
            raise RuntimeError(f"unexpected answer from the status store: {result!r}")
        raise RateLimited(gate.client, result.retry_after)

    def publish(self, ref: MessageRef, task_id: str | None = None) -> None:
        # No trace header: the attempt finds the submit's trace in the status record.
        self.celery.send_task(
            DELIVER_TASK, args=task_args(ref), queue=self.settings.queue, task_id=task_id
        )

    def forget(self, ref: MessageRef, message: Message) -> None:
        try:
            with outside_budget():  # a slow broker may have spent the request's Redis budget
                lane = self.doorbell.lane if self.doorbell else None
                self.store.submit.discard(ref, message, lane)
        except REDIS_ERRORS:
            msg = "getMessageId=%s publish failed, its record not removed: recovery re-enqueues it"
            log.error(msg, ref.id)

    def cancel(self, message: str | MessageRef, *, by: str | None = None) -> CancelResult:
        """Cancel a message not sent yet; the result says what happened (docs/api.md)."""
        return self.withdrawal.cancel(self.ref(message), by)

    def recall(self, message: str | MessageRef, *, by: str | None = None) -> RecallResult:
        """Recall a delivered message from its recipients (RecallRefused says why not)."""
        return self.withdrawal.recall(self.ref(message), by)

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

    def replay(self, message: str | MessageRef, *, by: str | None = None) -> ReplayOutcome:
        """Send a dead letter round again, in its own namespace; ``ReplayOutcome.OK`` when
        requeued. ``by`` names the operator in the message's history."""
        ref = self.ref(message)
        detail = "replayed from dead letters" + (f" by {by}" if by else "")
        outcome = self.store.recovery.replay(ref, detail, publish=self.publish)
        if outcome is ReplayOutcome.OK:
            log.info("getMessageId=%s of %s %s", ref.id, ref.namespace, detail)
        return outcome

    def discard_dead_letter(self, message: str | MessageRef, *, by: str) -> DiscardOutcome:
        """Give up on a dead message: off the dead-letter list, never replayed by ``--all``;
        its record stays until it expires. ``OK``, or why not (missing, not listed, the
        state it is in)."""
        with unavailable_if_down("status store"):
            ref = self.ref(message)
            verdict = self.store.recovery.discard_dead_letter(ref, f"discarded by {by}")
        if verdict is DiscardOutcome.OK:
            log.info(
                "getMessageId=%s of %s discarded from dead letters by %s", ref.id, ref.namespace, by
            )
        return verdict

    def close(self) -> None:
        self.lanes.flush()
        self.redis.close()


__all__ = ["PUBLISH_ERRORS", "Dispatcher", "Submitted", "unavailable_if_down"]
