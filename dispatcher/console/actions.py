"""Dead-letter filters from a query string, and replay/discard of a selection."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dispatcher.ids import ID_PATTERN
from dispatcher.producer import Dispatcher
from dispatcher.record import DeadLetterFilter

log = logging.getLogger(__name__)

ACTIONS = {"replay": "Replay", "discard": "Discard"}
MAX_SELECTION = 500


@dataclass(frozen=True)
class Outcome:
    message_id: str
    done: bool
    verdict: str
    """``ok`` or the store's reason (``missing``, ``state:delivered``, ...)."""

    @property
    def explanation(self) -> str:
        if self.done:
            return "done"
        if self.verdict == "missing":
            return "no such message (expired?)"
        if self.verdict == "not_listed":
            return "already discarded"
        if self.verdict.startswith("state:"):
            return f"not dead any more: {self.verdict[6:]}"
        return self.verdict


def parse_filter(
    query: Mapping[str, str], zone: ZoneInfo
) -> tuple[DeadLetterFilter, dict[str, str]]:
    """The filter a dead-letter query asks for, and a problem per field it could not read.

    ``since``/``until`` are the browser's ``datetime-local`` values in the console's zone.
    """
    problems: dict[str, str] = {}
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        text = (query.get(name) or "").strip()
        times[name] = None
        if text:
            try:
                times[name] = datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()
            except ValueError:
                problems[name] = "is not a date and time (YYYY-MM-DDTHH:MM)"
    before = (query.get("before") or "").strip()
    if before:
        try:
            pinned = float(before)
        except ValueError:
            problems["before"] = "is not a time"
        else:
            until = times["until"]
            times["until"] = pinned if until is None else min(until, pinned)
    where = DeadLetterFilter(
        client=(query.get("client") or "").strip() or None,
        code=(query.get("code") or "").strip() or None,
        since=times["since"],
        until=times["until"],
    )
    return where, problems


def parse_ids(values: list[str]) -> tuple[list[str], str]:
    """The selected ids (deduplicated, in order) and what is wrong with them, if anything."""
    ids = list(dict.fromkeys(value.strip() for value in values if value.strip()))
    if not ids:
        return [], "select at least one message"
    if len(ids) > MAX_SELECTION:
        return ids[:MAX_SELECTION], f"select at most {MAX_SELECTION} messages at once"
    bad = [i for i in ids if not ID_PATTERN.fullmatch(i)]
    if bad:
        return [i for i in ids if i not in bad], f"not a getMessageId: {bad[0][:80]!r}"
    return ids, ""


def apply_action(dispatcher: Dispatcher, action: str, ids: list[str], user: str) -> list[Outcome]:
    """Replay or discard each id; one outcome per id, in order (blocking: run in a thread)."""
    outcomes: list[Outcome] = []
    for message_id in ids:
        verdict: str
        if action == "replay":
            verdict = dispatcher.replay(message_id, by=f"{user} (console)")
        else:
            verdict = dispatcher.discard_dead_letter(message_id, by=f"{user} (console)")
        outcomes.append(Outcome(message_id, verdict == "ok", verdict))
    done = sum(o.done for o in outcomes)
    log.info("console: %s chose %s for %d messages: %d done", user, action, len(ids), done)
    return outcomes
