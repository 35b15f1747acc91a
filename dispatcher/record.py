"""The status record dispatcher keeps for each message, as callers read it back.

States and their transitions: docs/architecture.md, "Status state machine".
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.models import MessageType, TargetType


class State(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({State.DELIVERED, State.FAILED, State.DEAD})


class LastError(BaseModel):
    code: str
    message: str
    retryable: bool


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
    to: str
    targetType: TargetType
    channel: str
    client: str | None = None
    attempts: int = 0
    createdAt: datetime
    updatedAt: datetime
    deliveredAt: datetime | None = None
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
