"""Taking a message back: cancel it before it is sent, recall it once delivered
(docs/api.md, "Send later, cancel, recall").

Cancel is one store script, atomic against a starting attempt. Recall asks the channel
(its ``recall``, when its provider has one) to take the delivered copy back from each
recipient, within the provider's recall window,
and records ``recalled`` once every recipient's copy is gone. The store scripts record the
``message.cancelled`` / ``message.recalled`` webhook events with the change
(docs/webhooks.md); :func:`announce` logs it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dispatcher.channels import registry
from dispatcher.channels.base import RecallAnswer, RecallRequest, RecallVerdict
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS
from dispatcher.errors import NotFound, RecallRefused, Unavailable
from dispatcher.ids import MessageRef
from dispatcher.record import State
from dispatcher.store import CancelOutcome, CancelResult, StatusStore
from dispatcher.store.lanes import Lane

__all__ = [
    "CancelResult",
    "RecallResult",
    "RecipientRecall",
    "Withdrawal",
    "announce",
    "recipients",
]

log = logging.getLogger(__name__)

CANCELLED_EVENT = "message.cancelled"
RECALLED_EVENT = "message.recalled"

Recall = Callable[[Settings, Any, RecallRequest], RecallAnswer]


def announce(event: str, ref: MessageRef, record: dict[str, Any]) -> None:
    """A message was cancelled or recalled: its log line (the webhook event is in the store)."""
    log.info("getMessageId=%s %s %s", ref.id, event, record.get("detail", ""))


@dataclass(frozen=True, slots=True)
class RecipientRecall:
    to: str
    providerMessageId: str
    outcome: RecallVerdict
    detail: str


@dataclass(frozen=True, slots=True)
class RecallResult:
    """Every recipient's copy recalled: the message is ``recalled``."""

    state: State
    recipients: list[RecipientRecall] = field(default_factory=list)


class Withdrawal:
    """Cancel and recall for one producer's store."""

    def __init__(self, settings: Settings, store: StatusStore) -> None:
        self.settings = settings
        self.store = store

    def cancel(self, ref: MessageRef, by: str | None = None) -> CancelResult:
        detail = "cancelled" + (f" by {by}" if by else "")
        try:
            result = self.store.withdraw.cancel(ref, detail)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"status store unavailable: {type(exc).__name__}") from None
        if result.outcome is CancelOutcome.CANCELLED:
            announce(CANCELLED_EVENT, ref, {"detail": detail, "was": str(result.was)})
            self._count_ended(ref)
        return result

    def _count_ended(self, ref: MessageRef) -> None:
        """Count a cancelled message out of its lane's backlog (dispatcher/store/lanes.py)."""
        try:
            record = self.store.read.get_many([ref], with_history=False)[0]
        except REDIS_ERRORS:
            return  # the cancel stands; only the figure misses it
        if record is not None:
            lane = Lane.of(record.app, record.client, record.priority.value)
            self.store.lease.durations.add(lane.count("ended"))

    def recall(self, ref: MessageRef, by: str | None = None) -> RecallResult:
        """Recall a delivered message (raises NotFound, or RecallRefused saying why not)."""
        try:
            record = self.store.read.get(ref)
        except REDIS_ERRORS as exc:
            raise Unavailable(f"status store unavailable: {type(exc).__name__}") from None
        if record is None:
            raise NotFound(f"no message {ref.id}")
        state = str(record.state)
        if record.state is not State.DELIVERED:
            raise RecallRefused(
                "not_delivered",
                f"only a delivered message can be recalled; this one is {state}",
                state=state,
            )
        if record.to is None:
            raise RecallRefused(
                "not_supported", "a message to a list of recipients has no recall", state=state
            )
        recall = _channel_recall(record.channel)
        if recall is None:
            raise RecallRefused(
                "not_supported", f"the {record.channel} channel has no recall", state=state
            )
        if not record.providerMessageId or record.deliveredAt is None:
            raise RecallRefused("no_provider_id", "the provider gave no id to recall", state=state)
        request = RecallRequest(
            record.providerMessageId,
            record.to,
            record.targetType,
            record.sender,
            record.deliveredAt,
            app=record.app,
        )
        answer = recall(self.settings, self.store.redis, request)
        outcome = RecipientRecall(
            record.to, request.provider_message_id, answer.verdict, answer.detail
        )
        if answer.verdict is not RecallVerdict.RECALLED:
            return self._refused(ref, answer, outcome)
        detail = f"recalled from {record.to}" + (f" by {by}" if by else "")
        verdict = self.store.withdraw.recalled(ref, detail)
        if verdict == "missing":
            raise NotFound(f"no message {ref.id}")
        if verdict == "ok":
            announce(RECALLED_EVENT, ref, {"detail": detail})
        return RecallResult(State.RECALLED, [outcome])

    def _refused(
        self, ref: MessageRef, answer: RecallAnswer, outcome: RecipientRecall
    ) -> RecallResult:
        """A concurrent recall's result when it won the race; RecallRefused otherwise."""
        if answer.verdict is RecallVerdict.NOT_FOUND:
            now = self.store.read.get(ref)
            if now is not None and now.state is State.RECALLED:
                return RecallResult(State.RECALLED, [outcome])
        messages = {
            RecallVerdict.WINDOW_PASSED: f"the recall window has passed ({answer.detail})",
            RecallVerdict.NOT_ENABLED: "recall is not enabled for this provider app",
            RecallVerdict.NOT_FOUND: "the provider no longer has the message",
        }
        raise RecallRefused(
            answer.verdict.value,
            messages.get(answer.verdict, f"the recall failed: {answer.detail}"),
            state=str(State.DELIVERED),
            recipients=[_recipient(outcome)],
        )


def _channel_recall(name: str) -> Recall | None:
    try:
        return registry().get(name).recall
    except KeyError:
        return None


def _recipient(outcome: RecipientRecall) -> dict[str, str]:
    return {
        "to": outcome.to,
        "providerMessageId": outcome.providerMessageId,
        "outcome": outcome.outcome.value,
        "detail": outcome.detail,
    }


def recipients(result: RecallResult) -> list[dict[str, str]]:
    """The per-recipient outcomes as the API answers them."""
    return [_recipient(r) for r in result.recipients]
