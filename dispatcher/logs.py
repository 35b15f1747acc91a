"""Logging: one line per event, text or JSON (``DISPATCHER_LOG_FORMAT``).

Lines about a message say ``getMessageId=<id>``; the JSON format lifts it
into its own field so log search can filter on it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

MESSAGE_ID = re.compile(r"getMessageId=([A-Za-z0-9]+)")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(processName)s] %(message)s"


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
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str | int = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for this process (idempotent)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
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
