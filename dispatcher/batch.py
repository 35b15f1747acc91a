"""Submit many messages at once: each validated, recorded and queued on its own, all of
them in one pipeline of the create script (dispatcher/store/submit_many.py).

A batch answers one result per message, in order: the message's :class:`Submitted`, or
the error a single submit of it would have raised (InvalidMessage, MessageTooLarge,
Conflict, RateLimited, Unavailable). A refused message leaves nothing behind; the
others go on. The rules, for the HTTP API and the producer alike: docs/api.md,
"Batch submit".
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis as AsyncRedis

from dispatcher import tracing
from dispatcher.errors import (
    DispatcherError,
    FieldError,
    Forbidden,
    InvalidMessage,
    NotReplicated,
    Unavailable,
)
from dispatcher.gate import Gate
from dispatcher.ids import MessageRef
from dispatcher.limits import MAX_BATCH_MESSAGES, MIN_BATCH_MESSAGES
from dispatcher.models import Message
from dispatcher.producer import Dispatcher, Submitted, unavailable_if_down
from dispatcher.store.submit import CreateCall
from dispatcher.store.submit_many import (
    CreateReply,
    create_many,
    create_many_async,
    create_many_then,
    create_many_then_async,
    mark_published,
)

MESSAGES_FIELD = "messages"


def check_batch_size(count: int) -> None:
    """InvalidMessage unless ``count`` messages make a batch (1 to 500)."""
    if not MIN_BATCH_MESSAGES <= count <= MAX_BATCH_MESSAGES:
        error = f"must hold {MIN_BATCH_MESSAGES} to {MAX_BATCH_MESSAGES} messages, not {count}"
        raise InvalidMessage([FieldError(MESSAGES_FIELD, error)])


@dataclass(slots=True)
class _Pending:
    """A message of the batch that passed validation, on its way to the store."""

    index: int
    ref: MessageRef
    message: Message
    call: CreateCall
    publish: bool


@dataclass
class Batch:
    """One batch on its way: a result slot per message, and the messages still pending.

    Build it with :meth:`prepare`, send :attr:`calls` to the store (one pipeline), then
    :meth:`settle` the replies; :attr:`results` holds the answer of every message."""

    dispatcher: Dispatcher
    gate: Gate | None
    results: list[Submitted | DispatcherError]
    pending: list[_Pending]

    @classmethod
    def prepare(
        cls,
        dispatcher: Dispatcher,
        messages: Sequence[Message | DispatcherError],
        *,
        client: str | None,
        gate: Gate | None,
        namespace: str | None,
    ) -> Batch:
        """The create calls of the messages that are valid; an error given for a message is
        its result. ``gate``'s replay guard must be claimed already (once per request, not
        per message), so only its rate is passed on to each message."""
        if gate is not None and gate.guard is not None:
            gate = dataclasses.replace(gate, guard=None, guard_ttl_ms=0)
        results: list[Submitted | DispatcherError] = []
        pending: list[_Pending] = []
        for index, message in enumerate(messages):
            if isinstance(message, DispatcherError):
                results.append(message)
                continue
            ref, call, publish = dispatcher.prepare_create(message, client, gate, namespace)
            results.append(_NOT_YET)
            pending.append(_Pending(index, ref, message, call, publish))
        return cls(dispatcher, gate, results, pending)

    @property
    def calls(self) -> list[CreateCall]:
        return [each.call for each in self.pending]

    def settle(self, replies: Sequence[CreateReply]) -> list[_Pending]:
        """Each pending message's result from its reply; returns those still to publish
        (recorded, but the broker is not this Redis)."""
        to_publish: list[_Pending] = []
        for each, reply in zip(self.pending, replies, strict=True):
            if isinstance(reply, NotReplicated):  # DISPATCHER_REDIS_MIN_REPLICAS unmet
                self.results[each.index] = reply
                continue
            if isinstance(reply, Exception):
                self.results[each.index] = Unavailable(f"status store unavailable: {reply}")
                continue
            try:
                submitted = self.dispatcher.settle_create(
                    each.ref, each.message, reply, self.gate, each.call
                )
            except DispatcherError as refusal:
                self.results[each.index] = refusal
                continue
            self.results[each.index] = submitted
            if self.dispatcher.must_publish(each.publish, reply):
                to_publish.append(each)
        return to_publish

    def publish(self, recorded: Sequence[_Pending]) -> None:
        """Publish what was recorded; a message the broker refuses is removed again and
        answered Unavailable, and so are the ones after it, without trying the broker
        again (a dead broker costs one timeout per batch, not one per message). With the
        doorbell one ring, once the broker took it, drains the whole batch. Every message
        published (or rung) is then marked so, in one pipeline."""
        refusal: Unavailable | None = None
        removed: set[MessageRef] = set()
        published: list[MessageRef] = []
        rung = False
        for each in recorded:
            if refusal is not None:
                self.dispatcher.forget(each.ref, each.message)
                removed.add(each.ref)
                continue
            if rung:  # the ring published drains this one too
                published.append(each.ref)
                continue
            try:
                self.dispatcher.publish_or_forget(each.ref, each.message, mark=False)
                rung = self.dispatcher.doorbell is not None
            except Unavailable as failed:
                refusal = failed
                removed.add(each.ref)
                continue
            published.append(each.ref)
        if published:
            policy = self.dispatcher.store.policy
            mark_published(self.dispatcher.redis, published, policy.queued_grace_ms)
        if refusal is not None:  # the removed ones, and their repeats in the batch
            for each in self.pending:
                if each.ref in removed and isinstance(self.results[each.index], Submitted):
                    self.results[each.index] = refusal


class _NotYet(DispatcherError):
    """Placeholder of a result the store has not given yet (never returned)."""


_NOT_YET = _NotYet()


def validate_all(
    dispatcher: Dispatcher, payloads: Sequence[Any], client: str | None
) -> list[Message | DispatcherError]:
    """Each payload validated as a single submit's body would be, or the error why not."""
    checked: list[Message | DispatcherError] = []
    for payload in payloads:
        try:
            checked.append(dispatcher.validate(payload, client=client))
        except (InvalidMessage, Forbidden) as refused:
            checked.append(refused)
    return checked


def submit_payloads(
    dispatcher: Dispatcher, payloads: Sequence[Any], client: str | None
) -> list[str | DispatcherError]:
    """``Dispatcher.submit_many``: InvalidMessage for a batch of another size than 1 to
    500, Unavailable when Redis is down (nothing kept); else one result per payload."""
    check_batch_size(len(payloads))
    results = submit(dispatcher, validate_all(dispatcher, payloads, client), client=client)
    return [r.message_id if isinstance(r, Submitted) else r for r in results]


@tracing.spanned(tracing.SPAN_SUBMIT)
def submit(
    dispatcher: Dispatcher,
    messages: Sequence[Message | DispatcherError],
    *,
    client: str | None = None,
    gate: Gate | None = None,
    namespace: str | None = None,
) -> list[Submitted | DispatcherError]:
    """Queue the valid ones of ``messages`` through the producer's blocking client; an
    error in ``messages`` is that message's result. Unavailable (nothing kept) when
    Redis is down or nearly full."""
    dispatcher.health.admit()
    batch = Batch.prepare(dispatcher, messages, client=client, gate=gate, namespace=namespace)
    with unavailable_if_down("status store"), tracing.span(tracing.SPAN_ENQUEUE):
        wait = dispatcher.replica_wait
        if wait.replicas:  # the replicas' acknowledgement in the same pipeline
            replies = wait.confirm_batch(
                *create_many_then(dispatcher.redis, batch.calls, wait.commands)
            )
        else:
            replies = create_many(dispatcher.redis, batch.calls)
    batch.publish(batch.settle(replies))
    return batch.results


@tracing.spanned_async(tracing.SPAN_SUBMIT)
async def submit_async(
    dispatcher: Dispatcher,
    connection: AsyncRedis,
    messages: Sequence[Message | DispatcherError],
    *,
    client: str | None = None,
    gate: Gate | None = None,
    namespace: str | None = None,
) -> list[Submitted | DispatcherError]:
    """:func:`submit` through an asyncio client of the same Redis (the HTTP API); the
    blocking steps (the memory check every few seconds, publishing to a broker other
    than this Redis) run in one thread hop each for the whole batch."""
    if dispatcher.health.needs_redis():
        await asyncio.to_thread(dispatcher.health.admit)
    else:
        dispatcher.health.admit()
    batch = Batch.prepare(dispatcher, messages, client=client, gate=gate, namespace=namespace)
    with unavailable_if_down("status store"), tracing.span(tracing.SPAN_ENQUEUE):
        wait = dispatcher.replica_wait
        if wait.replicas:  # the replicas' acknowledgement in the same pipeline
            confirmed = await create_many_then_async(connection, batch.calls, wait.commands)
            replies = wait.confirm_batch(*confirmed)
        else:
            replies = await create_many_async(connection, batch.calls)
    recorded = batch.settle(replies)
    if recorded:
        await asyncio.to_thread(batch.publish, recorded)
    return batch.results
