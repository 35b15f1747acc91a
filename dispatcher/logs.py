"""Logging: one line per event, text or JSON (``DISPATCHER_LOG_FORMAT``).

Lines about a message say ``getMessageId=<id>``; the JSON format lifts it
into its own field so log search can filter on it. With tracing on
(dispatcher/tracing.py) a line written inside a span also names its
``trace_id`` and ``span_id``: a trace leads to its logs and back.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

from dispatcher import tracing

MESSAGE_ID = re.compile(r"getMessageId=([A-Za-z0-9]+)")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(processName)s] %(message)s"
TRACE_FIELDS = ("trace_id", "span_id")


class TraceContextFilter(logging.Filter):
    """Puts the current span's ``trace_id`` and ``span_id`` on each record (tracing on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for field, value in tracing.log_fields().items():
            setattr(record, field, value)
        return True


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, then ``trace_id=... span_id=...`` when the line has them."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            line += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        found = MESSAGE_ID.search(message)
        if found:
            line["getMessageId"] = found.group(1)
        for field in TRACE_FIELDS:
            value = getattr(record, field, None)
            if value:
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for this process (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    if tracing.enabled():
        handler.addFilter(TraceContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level if isinstance(level, int) else level.upper())
    # Per-request logs of HTTP libraries would drown the message lines (and cost CPU).
    for noisy in ("httpx", "httpcore", "qiniu", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Celery's "Task ... received" and "Task ... succeeded" lines: two per message, each
    # as costly as our own "getMessageId=... delivered", which says more (docs/architecture.md, "Costs":
    # INFO logging costs 9-14 % of a worker). Failures still log at ERROR; -l DEBUG shows all.
    chatty_level = logging.WARNING if root.getEffectiveLevel() > logging.DEBUG else logging.NOTSET
    for chatty in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(chatty).setLevel(chatty_level)
