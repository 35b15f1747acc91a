"""What the message page shows, built from the status record and the stored message.

Pure functions: no Redis here. The page shows the record's own fields, the
history as a timeline, the provider request rebuilt from the stored message
(secrets masked), and every other field a record may carry (receipts, webhook
attempts, per-recipient results, ...) as a table or a value, only when present.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dispatcher.channels.easemob import NAME as EASEMOB
from dispatcher.channels.easemob import build_body
from dispatcher.channels.registry import registry
from dispatcher.console.actions import ACTIONS, Action
from dispatcher.errors import InvalidMessage
from dispatcher.models import ImageInfo, VideoInfo, VoiceInfo, parse_message
from dispatcher.record import State, StatusRecord

MASK = "••••••"
RESOLVED_LATER = "(filled in from Qiniu at send time)"
MAX_TABLE_ROWS = 200
MEDIA_FIGURES = ("fileUrl", "thumbFileUrl", "fileLength", "duration", "imageWidth", "imageHeight")
"""What the worker asks Qiniu for when the caller left it out."""
# Spelled out, not taken from StatusRecord: a field the record gains later (receipts,
# webhook attempts, recipients) must show up as an extra until message.html places it.
SHOWN_FIELDS = frozenset({
    "getMessageId", "state", "messageType", "from", "to", "targetType", "channel", "app",
    "priority", "client",
    "attempts", "createdAt", "updatedAt", "deliveredAt", "providerMessageId", "lastError",
    "history",
})  # fmt: skip
"""Fields message.html shows in places of their own."""
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "apikey", "accesskey")
_SECRET_NAMES = frozenset({"sign", "signature", "authorization", "privatekey", "pwd"})


@dataclass(frozen=True)
class Step:
    """One history entry on the timeline."""

    state: str
    at: datetime
    detail: str | None
    since_previous: float | None
    """Seconds since the step before (None for the first)."""
    since_start: float


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    more: int = 0
    """Rows left out (only the first ``MAX_TABLE_ROWS`` are shown)."""


@dataclass(frozen=True)
class MessageView:
    record: StatusRecord
    steps: list[Step]
    provider_ids: list[str]
    provider_request: str | None
    """The provider request body as pretty JSON, secrets masked (None: nothing stored)."""
    provider_note: str | None
    actions: list[Action] = field(default_factory=list)
    """What the operator may still do with the message."""
    extra_values: list[tuple[str, str]] = field(default_factory=list)
    extra_tables: list[Table] = field(default_factory=list)


def message_view(
    record: StatusRecord, stored: dict[str, Any] | None, media_domain: str | None
) -> MessageView:
    body, note = provider_request(record, stored, media_domain)
    values, tables = extras(record)
    return MessageView(
        record=record,
        steps=timeline(record),
        provider_ids=[i for i in (record.providerMessageId or "").split(",") if i],
        provider_request=body,
        provider_note=note,
        actions=[ACTIONS[name] for name in offered_actions(record)],
        extra_values=values,
        extra_tables=tables,
    )


def offered_actions(record: StatusRecord) -> list[str]:
    """Replay or discard a dead message, cancel one not final, recall a delivered one."""
    if record.state is State.DEAD:
        return ["replay", "discard"]
    if not record.state.terminal:
        return ["cancel"]
    if record.state is State.DELIVERED and _channel_recalls(record.channel):
        return ["recall"]
    return []


def _channel_recalls(name: str) -> bool:
    try:
        return registry().get(name).recall is not None
    except KeyError:
        return False


def timeline(record: StatusRecord) -> list[Step]:
    steps: list[Step] = []
    start = record.history[0].at if record.history else record.createdAt
    previous: datetime | None = None
    for entry in record.history:
        steps.append(
            Step(
                state=entry.state.value,
                at=entry.at,
                detail=entry.detail,
                since_previous=None if previous is None else (entry.at - previous).total_seconds(),
                since_start=(entry.at - start).total_seconds(),
            )
        )
        previous = entry.at
    return steps


def provider_request(
    record: StatusRecord, stored: dict[str, Any] | None, media_domain: str | None
) -> tuple[str | None, str | None]:
    """The body the channel sends for this message, rebuilt from the stored message."""
    if stored is None:
        return None, "the stored message has expired or was never kept"
    if record.channel != EASEMOB:
        return _pretty(mask_secrets(stored)), f"the stored message (channel {record.channel})"
    try:
        message = parse_message(stored, media_domain=media_domain)
    except InvalidMessage as exc:
        return _pretty(mask_secrets(stored)), f"the stored message does not parse: {exc}"
    info = message.messageInfo
    note = "POST /{org}/{app}/messages, rebuilt from the stored message; secrets masked"
    if isinstance(info, ImageInfo | VoiceInfo | VideoInfo):
        unresolved: dict[str, Any] = {
            name: RESOLVED_LATER
            for name in MEDIA_FIGURES
            if name in type(info).model_fields and getattr(info, name) is None
        }
        if unresolved:
            message = message.model_copy(update={"messageInfo": info.model_copy(update=unresolved)})
            note += "; media figures the caller left out are filled in by the worker"
    return _pretty(mask_secrets(build_body(record.getMessageId, message))), note


def mask_secrets(value: Any) -> Any:
    """A copy with values under secret-sounding keys, and such URL parameters, masked."""
    if isinstance(value, dict):
        return {
            key: MASK
            if _secret_name(str(key)) and value[key] not in (None, "")
            else mask_secrets(value[key])
            for key in value
        }
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str) and "=" in value and "://" in value:
        return _mask_url(value)
    return value


def _secret_name(name: str) -> bool:
    plain = re.sub(r"[^a-z]", "", name.lower())
    return plain in _SECRET_NAMES or any(word in plain for word in _SECRET_WORDS)


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    if not parts.query:
        return url
    query = [(k, MASK if _secret_name(k) else v) for k, v in parse_qsl(parts.query, True)]
    return urlunsplit(parts._replace(query=urlencode(query, safe=MASK)))


def extras(record: StatusRecord) -> tuple[list[tuple[str, str]], list[Table]]:
    """Fields of the record this page has no section of its own for."""
    values: list[tuple[str, str]] = []
    tables: list[Table] = []
    for name, value in record.model_dump(mode="json", by_alias=True).items():
        if name in SHOWN_FIELDS or value in (None, "", [], {}):
            continue
        title = humanize(name)
        if isinstance(value, list) and all(isinstance(row, dict) for row in value):
            columns = list(dict.fromkeys(key for row in value for key in row))
            shown = [mask_secrets(row) for row in value[:MAX_TABLE_ROWS]]
            rows = [[_cell(row.get(c)) for c in columns] for row in shown]
            tables.append(Table(title, columns, rows, max(0, len(value) - MAX_TABLE_ROWS)))
        else:
            values.append((title, _cell(mask_secrets(value))))
    return values, tables


def humanize(name: str) -> str:
    """``webhookAttempts`` -> ``Webhook attempts``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").lower()
    return words[:1].upper() + words[1:]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2)
