"""The status record dispatcher keeps for each message, and its dead letters, as callers
read them back.

States and their transitions: docs/architecture.md, "Status state machine".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.ids import MessageRef
from dispatcher.models import MessageType, TargetType
from dispatcher.priority import DEFAULT_PRIORITY, Priority


class State(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    PARTIALLY_DELIVERED = "partially_delivered"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    RECALLED = "recalled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        State.DELIVERED,
        State.PARTIALLY_DELIVERED,
        State.FAILED,
        State.DEAD,
        State.CANCELLED,
        State.RECALLED,
    }
)


class LastError(BaseModel):
    code: str
    message: str
    retryable: bool


class RecipientCountsView(BaseModel):
    """A multi-recipient message's recipients by outcome (docs/api.md, "Fan-out")."""

    recipients: int
    delivered: int
    failed: int
    pending: int


class HistoryEntry(BaseModel):
    state: State
    at: datetime
    detail: str | None = None


class StatusRecord(BaseModel):
    """What anyone holding a getMessageId can read back."""

    getMessageId: str
    state: State
    messageType: MessageType
    sender: str = Field(alias="from")
    to: str | None = None
    """The recipient; None when the message names a list (see ``recipients``)."""
    recipients: RecipientCountsView | None = None
    """A multi-recipient message's counts (None for one recipient)."""
    targetType: TargetType
    channel: str
    app: str | None = None
    """The provider app it goes through, chosen at submit (docs/operations.md); None: a
    channel with one app (WeChat), or a record older than several apps."""
    priority: Priority = DEFAULT_PRIORITY
    """The priority it was submitted with (dispatcher/priority.py)."""
    client: str | None = None
    attempts: int = 0
    createdAt: datetime
    updatedAt: datetime
    scheduledFor: datetime | None = None
    """When a message submitted with ``sendAt`` is (or was) due to be queued."""
    deliveredAt: datetime | None = None
    readAt: datetime | None = None
    """When the receiver read it (a provider's read receipt; docs/webhooks.md)."""
    providerMessageId: str | None = None
    lastError: LastError | None = None
    history: list[HistoryEntry] = Field(default_factory=list)

    model_config = ConfigDict(populate_by_name=True)

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


def from_millis(value: str | int | None) -> datetime | None:
    if value in (None, ""):
        return None
    return datetime.fromtimestamp(int(value) / 1000, tz=UTC)


class DeadLetter(BaseModel):
    getMessageId: str
    diedAt: float = Field(description="unix seconds")
    lastError: LastError | None
    client: str = Field(
        description="the client whose message it is: its namespace (docs/architecture.md)"
    )

    @property
    def ref(self) -> MessageRef:
        return MessageRef(self.client, self.getMessageId)


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operator wants to see; None matches anything."""

    client: str | None = None
    """The namespace (client id) the messages belong to."""
    code: str | None = None
    """``lastError.code``, exactly."""
    since: float | None = None
    """Died at or after (unix seconds)."""
    until: float | None = None
    """Died at or before (unix seconds)."""

    def matches(self, letter: DeadLetter) -> bool:
        if self.client is not None and letter.client != self.client:
            return False
        code = letter.lastError.code if letter.lastError else None
        return self.code is None or code == self.code


@dataclass(frozen=True)
class DeadLetterPage:
    """Matching dead letters, newest first, and how far the search looked."""

    letters: list[DeadLetter]
    scanned: int
    """Dead letters of the time range looked at; the next page starts at this offset."""
    exhausted: bool
    """Every dead letter of the time range was looked at."""
    first_died: float | None = None
    """When the first letter looked at died: passed as ``until`` with ``offset=scanned``,
    later pages ignore letters that died since (they would shift the offsets)."""
