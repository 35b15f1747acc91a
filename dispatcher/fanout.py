"""One attempt at a multi-recipient message: provider calls over the recipients still pending.

A message whose ``to`` is a list is split into provider calls of at most the channel's
per-call cap (Easemob: 600 users, 3 groups, 10 rooms), made one after the other. Each
call's outcome is written for every recipient it named (:mod:`dispatcher.store.recipients`,
one script) before the next call goes, so an attempt that dies between two calls leaves
exactly the answered recipients recorded, and the next attempt sends to the others only:
a recipient whose call succeeded is never sent to again. A retryable failure of a call
ends the attempt (the message is retried, later, for the recipients still pending); a
permanent one fails every recipient still pending. docs/api.md, "Fan-out", tells the
resulting states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dispatcher.channels.base import Receipt
from dispatcher.errors import DeliveryError, ProviderError
from dispatcher.ids import MessageRef
from dispatcher.limits import GROUPS_PER_CALL, ROOMS_PER_CALL, USERS_PER_CALL
from dispatcher.models import Message, TargetType
from dispatcher.store.recipients import RecipientCounts, RecipientStore, delivered, failed


@dataclass(frozen=True, slots=True)
class Refused:
    """The provider answered the call but refused this recipient for good."""

    code: str


CallAnswer = dict[str, "str | Refused"]
"""A call's answer by recipient: its provider message id, or why it was refused. A
recipient missing from the answer stays pending (sent again by the next attempt)."""

SendCall = Callable[[list[str], bool], CallAnswer]
"""Make one provider call to these recipients (the flag: its rate slot is prepaid); raise
:class:`DeliveryError` when the call as a whole fails."""


PER_CALL: dict[TargetType, int] = {
    "users": USERS_PER_CALL,
    "chatgroups": GROUPS_PER_CALL,
    "chatrooms": ROOMS_PER_CALL,
}
"""Recipients of one provider call, by target type."""


def deliver(
    ref: MessageRef,
    message: Message,
    *,
    store: RecipientStore,
    send_call: SendCall,
    prepaid: bool = False,
) -> Receipt:
    """Send ``message`` to its pending recipients; a :class:`Receipt` with the counts when
    none is left pending, else raise (retryable: the recipients not answered yet)."""
    names = message.recipients
    pending = store.pending(ref, len(names))
    cap = PER_CALL[message.target_type]
    calls = 0
    for start in range(0, len(pending), cap):
        chunk = pending[start : start + cap]
        try:
            answer = send_call([names[i] for i in chunk], prepaid)
        except DeliveryError as error:
            if error.retryable:
                raise
            # The body is the same for every call: a permanent refusal is the message's.
            _record(store, ref, [(i, failed(error.code)) for i in pending[start:]])
            break
        calls += 1
        prepaid = False
        outcomes = [(i, _slot(answer[names[i]])) for i in chunk if names[i] in answer]
        _record(store, ref, outcomes)
    counts = store.counts(ref)
    if counts is None:
        raise ProviderError("record_missing", "the message's record is gone", retryable=False)
    return _receipt(counts, calls)


def _slot(answer: str | Refused) -> str:
    return failed(answer.code) if isinstance(answer, Refused) else delivered(answer)


def _record(store: RecipientStore, ref: MessageRef, outcomes: list[tuple[int, str]]) -> None:
    if outcomes and store.record(ref, outcomes) is None:
        raise ProviderError("record_missing", "the message's record is gone", retryable=False)


def _receipt(counts: RecipientCounts, calls: int) -> Receipt:
    said = (
        f"{counts.delivered} of {counts.recipients} recipients delivered, "
        f"{counts.failed} failed, {calls} calls in this attempt"
    )
    if counts.pending:
        raise ProviderError(
            "recipients_pending",
            f"{counts.pending} recipients not answered yet; {said}",
            retryable=True,
        )
    if counts.delivered == 0:
        raise ProviderError(
            "all_recipients_failed", f"every recipient failed; {said}", retryable=False
        )
    return Receipt(None, [said], recipients=counts)
