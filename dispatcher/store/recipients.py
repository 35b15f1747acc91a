"""Per-recipient outcomes of a multi-recipient message, kept compactly.

One Redis string per message (:func:`dispatcher.keys.recipients`) holds a fixed-width
slot of :data:`SLOT` bytes per recipient, in the order of the message's ``to`` list
(the list itself stays in the recorded message): all zero bytes while the recipient is
pending, the Easemob message id (decimal, zero-padded) once delivered, ``!`` and the
error code once it failed for good, ``=`` and the provider's answer when a delivery came
back without a numeric id. 10,000 recipients take 200 KB: 20 bytes each. The message's
record counts them (``recipients``, ``rcptDelivered``, ``rcptFailed``); ``lua/recipients.lua``
moves a call's slots and the counters in one step (docs/architecture.md, "Fan-out").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.ids import MessageRef
from dispatcher.models import Message
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load

SLOT = 20
"""Bytes per recipient: a 64-bit Easemob message id has at most 20 decimal digits."""

KEEP_BEYOND_RECORD = 3600
"""Seconds the outcomes outlive the record's own TTL at their last change (a retry's wait
lengthens the record's life after the outcome was written)."""

_PENDING = b"\0"
_FAILED = "!"
_TEXT = "="


class RecipientState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecipientCounts:
    """How a multi-recipient message stands: ``pending`` = neither delivered nor failed."""

    recipients: int
    delivered: int
    failed: int

    @property
    def pending(self) -> int:
        return self.recipients - self.delivered - self.failed

    def public(self) -> dict[str, int]:
        return {
            "recipients": self.recipients,
            "delivered": self.delivered,
            "failed": self.failed,
            "pending": self.pending,
        }


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """One recipient as the provider left it: its id on delivery, an error code on failure."""

    to: str
    state: RecipientState
    providerMessageId: str | None = None
    error: str | None = None

    def public(self) -> dict[str, str]:
        """As the recipients endpoint shows it: ``to``, ``state``, and the id or error if any."""
        shown = {"to": self.to, "state": self.state.value}
        if self.providerMessageId is not None:
            shown["providerMessageId"] = self.providerMessageId
        if self.error is not None:
            shown["error"] = self.error
        return shown


def delivered(provider_id: str) -> str:
    """The slot of a recipient delivered as ``provider_id``."""
    if provider_id.isdigit() and len(provider_id) <= SLOT:
        return provider_id.rjust(SLOT, "0")
    return (_TEXT + provider_id)[:SLOT].ljust(SLOT)


def failed(code: str) -> str:
    """The slot of a recipient that failed for good with error ``code`` (cut to fit)."""
    return (_FAILED + code)[:SLOT].ljust(SLOT)


def _outcome(name: str, slot: bytes) -> RecipientOutcome:
    if not slot or slot[:1] == _PENDING:
        return RecipientOutcome(name, RecipientState.PENDING)
    value = slot.decode("ascii", "replace")
    if value.startswith(_FAILED):
        return RecipientOutcome(name, RecipientState.FAILED, error=value[1:].rstrip())
    if value.startswith(_TEXT):
        return RecipientOutcome(name, RecipientState.DELIVERED, value[1:].rstrip())
    return RecipientOutcome(name, RecipientState.DELIVERED, value.lstrip("0") or "0")


def record_fields(message: Message) -> list[str]:
    """The record's fields naming the recipients: ``to`` for one, the count for a list."""
    if message.fans_out:
        return ["recipients", str(len(message.recipients))]
    return ["to", message.recipients[0]]


@dataclass(frozen=True, slots=True)
class RecipientPage:
    outcomes: list[RecipientOutcome]
    cursor: int | None
    """Where the next page starts (an index into ``to``), or None after the last one."""


class RecipientStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._record = load("recipients")

    def pending(self, ref: MessageRef, total: int) -> list[int]:
        """Indexes (into ``to``) of the recipients neither delivered nor failed yet."""
        raw = self.redis.get(keys.recipients(ref))
        slots = b"" if raw is None else bytes(raw)  # type: ignore[arg-type]
        return [i for i in range(total) if slots[i * SLOT : i * SLOT + 1] in (b"", _PENDING)]

    def record(self, ref: MessageRef, outcomes: list[tuple[int, str]]) -> RecipientCounts | None:
        """Write one call's outcomes (index, slot from :func:`delivered`/:func:`failed`)
        and move the counters, in one step; the counts after it (None: no record)."""
        flat: list[str | int] = []
        for index, slot in outcomes:
            flat += [index, slot]
        reply = self._record(
            self.redis,
            {"message": keys.message(ref), "recipients": keys.recipients(ref)},
            {"ttl": self.policy.ttl + KEEP_BEYOND_RECORD, "width": SLOT, "outcomes": flat},
        )
        if not isinstance(reply, list):
            return None
        total, done, lost = (int(v) for v in reply)
        return RecipientCounts(total, done, lost)

    def counts(self, ref: MessageRef) -> RecipientCounts | None:
        """The counts of a multi-recipient message (None: unknown, or one recipient)."""
        values = self.redis.hmget(keys.message(ref), ["recipients", "rcptDelivered", "rcptFailed"])
        return counts_of(*(None if v is None else text(v) for v in values))

    def page(
        self,
        ref: MessageRef,
        *,
        state: RecipientState | None,
        cursor: int,
        limit: int,
    ) -> RecipientPage | None:
        """Up to ``limit`` recipients from index ``cursor`` on, only those in ``state`` if
        given; None when the message is unknown or has one recipient."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.message(ref), "message")
        pipe.get(keys.recipients(ref))
        stored, raw = pipe.execute()
        if stored is None:
            return None
        names = json.loads(text(stored)).get("to")
        if not isinstance(names, list):
            return None
        slots = b"" if raw is None else bytes(raw)
        found: list[RecipientOutcome] = []
        index = max(cursor, 0)
        while index < len(names) and len(found) < limit:
            outcome = _outcome(names[index], slots[index * SLOT : (index + 1) * SLOT])
            if state is None or outcome.state is state:
                found.append(outcome)
            index += 1
        return RecipientPage(found, index if index < len(names) else None)


def counts_of(
    recipients: str | None, delivered_count: str | None, failed_count: str | None
) -> RecipientCounts | None:
    """The counts from the record's fields (None when it has no ``recipients``)."""
    if not recipients:
        return None
    return RecipientCounts(int(recipients), int(delivered_count or 0), int(failed_count or 0))
