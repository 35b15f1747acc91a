"""``sendAt``: when a submit asks to be sent (docs/api.md, "Send later, cancel, recall").

RFC 3339 with an explicit offset (``2026-11-30T09:00:00+08:00``, ``...Z``) or Unix
epoch milliseconds. A time in the past, or within :data:`IMMEDIATE_MS` of now, means
now; one further ahead than the configured maximum is refused.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

if TYPE_CHECKING:
    from dispatcher.models import Message

IMMEDIATE_MS = 1000
"""A ``sendAt`` at most this close to now is sent at once."""

_RFC3339 = re.compile(
    r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)", re.ASCII
)


SendAt = datetime | int | str
"""When to send: a zone-aware datetime, RFC 3339 text with an offset, or epoch ms."""


def parse_send_at(value: Any) -> int:
    """Epoch milliseconds of a ``sendAt`` value (ValueError naming what is wrong)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("must carry its time zone")
        return int(value.timestamp() * 1000)
    if isinstance(value, bool):
        raise ValueError("must be an RFC 3339 time with an offset or epoch milliseconds")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative (epoch milliseconds)")
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value):
        try:
            moment = datetime.fromisoformat(value.upper())
        except ValueError:
            raise ValueError("is not a valid date and time") from None
        return int(moment.timestamp() * 1000)
    raise ValueError(
        "must be an RFC 3339 time with an offset (2026-11-30T09:00:00+08:00) or epoch milliseconds"
    )


SendAtMs = Annotated[
    int,
    BeforeValidator(parse_send_at),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "integer", "minimum": 0},
            ],
            "description": "when to send: RFC 3339 with an offset, or epoch milliseconds; "
            "past or within 1 s means now (docs/api.md)",
        }
    ),
]
"""A request's ``sendAt``, validated into epoch milliseconds."""


def check_horizon(send_at_ms: int, now_ms: int, max_days: float) -> None:
    """ValueError when ``send_at_ms`` is further ahead than ``max_days``."""
    if send_at_ms - now_ms > max_days * 86_400_000:
        raise ValueError(f"must be at most {max_days:g} days ahead")


def apply_send_at(message: Message, send_at: SendAt | None, max_days: float) -> None:
    """Set ``send_at`` (when given) as the message's sendAt and check how far ahead it
    is; InvalidMessage naming ``sendAt`` otherwise."""
    from dispatcher.errors import FieldError, InvalidMessage  # a neighbour on floor 1

    try:
        if send_at is not None:
            message.sendAt = parse_send_at(send_at)
        if message.sendAt is not None:
            check_horizon(message.sendAt, int(time.time() * 1000), max_days)
    except ValueError as exc:
        raise InvalidMessage([FieldError("sendAt", str(exc))]) from None
