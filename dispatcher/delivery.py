"""One delivery attempt, top to bottom: lease -> channel -> media -> send -> outcome.

``attempt`` never raises for a delivery problem: it records the outcome in the
status store and tells the caller whether (and when) to try again. The attempt
stays inside its lease: before each provider call the lease is kept (extended
while it is still ours) or the attempt is abandoned (docs/reliability.md, "The
state machine").
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from dispatcher import tracing
from dispatcher.channels import Channel, Origin, registry
from dispatcher.config import Settings
from dispatcher.enqueue import new_task_id
from dispatcher.errors import DeliveryError, InvalidMessage, LeaseLost, MediaError
from dispatcher.ids import MessageRef
from dispatcher.media.resolve import needs_resolution
from dispatcher.models import ImageInfo, Message, VideoInfo, VoiceInfo
from dispatcher.ratelimit import Prepay
from dispatcher.store import Lease, StandDown, StandDownReason, StatusStore, Transition
from dispatcher.store.liveness import process_identity

log = logging.getLogger(__name__)


class MediaResolver(Protocol):
    def __call__(
        self, info: ImageInfo | VoiceInfo | VideoInfo
    ) -> ImageInfo | VoiceInfo | VideoInfo:
        """Fill in what the caller left out of a media message, checking the limits."""
        ...


class AttemptOutcome(StrEnum):
    """What one attempt came to. ``STOOD_DOWN``: there was nothing to do here (done,
    gone, held by another worker, or a late retry refused)."""

    DELIVERED = "delivered"
    PARTIALLY_DELIVERED = "partially_delivered"
    RETRYING = "retrying"
    FAILED = "failed"
    DEAD = "dead"
    STOOD_DOWN = "stood-down"


@dataclass(frozen=True, slots=True)
class Outcome:
    """An attempt's outcome: when ``RETRYING``, the seconds until the retry is due (it waits
    in the status store's schedule, nothing to publish); when ``STOOD_DOWN``, why."""

    state: AttemptOutcome
    retry_in: float | None = None
    reason: str = ""


def backoff_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None = None
) -> float:
    """Exponential backoff with full jitter; never earlier than the provider's Retry-After."""
    ceiling = min(cap, base * 2 ** max(attempt - 1, 0))
    delay = random.uniform(0, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


LEASE_MARGIN = 1.0
"""Seconds of lease kept beyond a provider call's longest duration (the outcome's write)."""


@dataclass
class LeaseKeeper:
    """Keeps one attempt inside its lease: called before each provider call (the channel's
    :meth:`~dispatcher.channels.Origin.before_call`), it extends the lease when what is left
    would not cover the call, or raises :class:`LeaseLost` when the lease is no longer ours.

    ``expires`` is on this process's monotonic clock, read before the lease was asked for,
    so it never runs later than the lease on Redis's clock; waits for a rate slot or a token
    inside the attempt count against it."""

    lease: Lease
    store: StatusStore
    lease_seconds: float
    expires: float

    def __call__(self, longest: float) -> None:
        needed = longest + LEASE_MARGIN
        if self.expires - time.monotonic() >= needed:
            return
        asked = time.monotonic()
        left = self.store.lease.extend(self.lease, max(self.lease_seconds, needed))
        if left is None:
            raise LeaseLost(f"attempt {self.lease.number} lost its lease before a provider call")
        self.expires = asked + left


_attempts = itertools.count(1)


def attempt_owner() -> str:
    """Unique per attempt: a redelivered copy of the same Celery task must not share it.

    This process's identity (the one its heartbeat names, so recovery knows when the
    holder died: dispatcher/store/liveness.py) and a counter of its attempts: no uuid per
    attempt."""
    return f"{process_identity()}:{next(_attempts)}"


def attempt(
    ref: MessageRef,
    *,
    settings: Settings,
    store: StatusStore,
    channels: dict[str, Channel],
    resolve_media: MediaResolver | None,
    task_id: str | None = None,
) -> Outcome:
    """One attempt for the task ``task_id`` (None: no task, e.g. a tool or a test)."""
    with tracing.span(tracing.SPAN_LEASE):
        lease = store.lease.begin(
            ref,
            attempt_owner(),
            settings.lease_seconds,
            prepay=lease_prepay(channels),
            task_id=task_id,
        )
    return attempt_granted(
        lease, settings=settings, store=store, channels=channels, resolve_media=resolve_media
    )


def lease_prepay(channels: dict[str, Channel]) -> Prepay | None:
    """The rate slot a lease may also take: only one channel's fits in the script."""
    return next((p for p in (c.rate_prepay() for c in channels.values()) if p), None)


def attempt_granted(
    lease: Lease | StandDown,
    *,
    settings: Settings,
    store: StatusStore,
    channels: dict[str, Channel],
    resolve_media: MediaResolver | None,
) -> Outcome:
    """The attempt once the store answered its lease (a grant, or why it stands down)."""
    if isinstance(lease, StandDown):
        message_id = lease.ref.id
        if lease.reason is StandDownReason.MISSING:
            # No record to dead-letter (expired, or never accepted): keep a bounded trace.
            log.warning("getMessageId=%s dropped from the queue: %s", message_id, lease.detail)
            store.recovery.record_rejected(
                "unknown_id", f"getMessageId={message_id}: {lease.detail}"
            )
        else:
            log.info("getMessageId=%s standing down: %s", message_id, lease.detail)
        return Outcome(AttemptOutcome.STOOD_DOWN, reason=lease.reason.value)

    message_id = lease.ref.id
    tracing.annotate({tracing.ATTEMPT: lease.number, tracing.CLIENT: lease.client})
    try:
        message = Message.from_stored(lease.payload)
        # The channel the message center chose at submit (older records: by type).
        spec = registry().get(lease.channel) if lease.channel else registry().for_message(message)
        channel = channels.get(spec.name)
        tracing.annotate({tracing.CHANNEL: spec.name})
        if channel is None:
            raise DeliveryError(
                "channel_not_configured",
                f"the {spec.name} channel is not configured on this worker",
                retryable=True,
            )
        if int(message.messageType) in spec.media:
            with tracing.span(tracing.SPAN_MEDIA):
                message = _resolved(message, resolve_media)
        began = lease.began if lease.began is not None else time.monotonic()
        keeper = LeaseKeeper(lease, store, settings.lease_seconds, began + settings.lease_seconds)
        origin = Origin(lease.ref, lease.client, keeper, app=lease.app)
        with tracing.span(tracing.SPAN_PROVIDER, {tracing.CHANNEL: spec.name}):
            receipt = channel.send(message_id, message, prepaid=lease.prepaid, origin=origin)
    except LeaseLost as lost:
        log.warning("getMessageId=%s attempt abandoned: %s", message_id, lost)
        store.lease.note(lease.ref, f"attempt {lease.number} by {lease.owner} abandoned: {lost}")
        return Outcome(AttemptOutcome.STOOD_DOWN, reason="lease_lost")
    except DeliveryError as error:
        return _record_failure(lease, error, settings, store)
    except InvalidMessage as error:
        failure = DeliveryError("invalid_stored_message", str(error), retryable=False)
        return _record_failure(lease, failure, settings, store)
    except Exception as error:  # a bug or an outage we did not foresee: retry, never lose
        log.exception("getMessageId=%s unexpected error in delivery", message_id)
        failure = DeliveryError(
            "internal_error", f"{type(error).__name__}: {error}", retryable=True
        )
        return _record_failure(lease, failure, settings, store)

    detail = f"delivered via {channel.name}"
    if receipt.notes:
        detail += "; " + "; ".join(receipt.notes)
    if receipt.recipients is not None and receipt.recipients.failed:
        store.lease.mark_partially_delivered(lease, detail)
        log.info("getMessageId=%s partially delivered: %s", message_id, detail)
        return Outcome(AttemptOutcome.PARTIALLY_DELIVERED)
    verdict = store.lease.mark_delivered(lease, receipt.provider_message_id, detail)
    log.info(
        "getMessageId=%s delivered attempt=%d providerMessageId=%s (%s)",
        message_id,
        lease.number,
        receipt.provider_message_id,
        verdict,
    )
    return Outcome(AttemptOutcome.DELIVERED)


def _resolved(message: Message, resolve_media: MediaResolver | None) -> Message:
    info = message.messageInfo
    assert isinstance(info, ImageInfo | VoiceInfo | VideoInfo)
    if resolve_media is None:
        if not needs_resolution(info):
            return message
        raise MediaError(
            "media_resolution_unavailable",
            "media resolution unavailable: Qiniu is not configured and the message does not "
            "carry every URL, size and duration",
            retryable=False,
        )
    return message.model_copy(update={"messageInfo": resolve_media(info)})


def _record_failure(
    lease: Lease, error: DeliveryError, settings: Settings, store: StatusStore
) -> Outcome:
    message_id = lease.ref.id
    tracing.annotate({tracing.ERROR_CODE: error.code})
    if error.defers and error.retry_after is not None:
        return _defer(lease, error, settings, store)
    detail = error.message
    if error.ambiguous:
        detail = f"ambiguous: {detail}"
    if not error.retryable:
        verdict = store.lease.mark_failed(lease, error, detail)
        if verdict is not Transition.OK:
            return _late(lease, verdict, "failed", error)
        log.warning("getMessageId=%s failed permanently: %s", message_id, error)
        return Outcome(AttemptOutcome.FAILED)
    if lease.number >= settings.max_attempts:
        verdict = store.lease.mark_dead(lease, error, f"{detail}; {lease.number} attempts used")
        if verdict is not Transition.OK:
            return _late(lease, verdict, "dead", error)
        log.error("getMessageId=%s dead after %d attempts: %s", message_id, lease.number, error)
        return Outcome(AttemptOutcome.DEAD)
    retry_after = error.retry_after
    if retry_after is not None:
        retry_after = min(retry_after, settings.retry_after_cap)
    delay = backoff_delay(
        lease.number,
        base=settings.backoff_base,
        cap=settings.backoff_cap,
        retry_after=retry_after,
    )
    next_task = new_task_id()
    verdict = store.lease.mark_retrying(
        lease, error, delay, f"{detail}; next attempt in {delay:.2f}s", task_id=next_task
    )
    if verdict is not Transition.OK:
        return _late(lease, verdict, "retrying", error)
    log.warning(
        "getMessageId=%s attempt %d failed, retry in %.2fs: %s",
        message_id,
        lease.number,
        delay,
        error,
    )
    return Outcome(AttemptOutcome.RETRYING, retry_in=delay)


def _late(lease: Lease, verdict: Transition, outcome: str, error: DeliveryError) -> Outcome:
    """The attempt's outcome reached the store after its lease was taken over (or the
    message ended meanwhile): the history has it, the state is another attempt's."""
    log.warning(
        "getMessageId=%s attempt %d would be %s (%s) but no longer holds its lease: %s",
        lease.ref.id,
        lease.number,
        outcome,
        error,
        verdict,
    )
    return Outcome(AttemptOutcome.STOOD_DOWN, reason=verdict.value)


def _defer(lease: Lease, error: DeliveryError, settings: Settings, store: StatusStore) -> Outcome:
    """A provider's pause: wait until it ends, without using up an attempt."""
    delay = error.retry_after or 0.0
    next_task = new_task_id()
    verdict = store.lease.mark_deferred(
        lease,
        error,
        delay,
        f"{error.message}; deferred {delay:.0f}s, attempt not counted",
        task_id=next_task,
    )
    if verdict is not Transition.OK:
        return Outcome(AttemptOutcome.STOOD_DOWN, reason=verdict.value)
    log.warning("getMessageId=%s deferred %.0fs: %s", lease.ref.id, delay, error)
    return Outcome(AttemptOutcome.RETRYING, retry_in=delay)
