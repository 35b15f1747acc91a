"""Dead-letter filters from a query string, the search, and replay/discard of a selection."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dispatcher.ids import ID_PATTERN, NAMESPACE_PATTERN, MessageRef
from dispatcher.producer import Dispatcher
from dispatcher.record import DeadLetter, DeadLetterFilter, DeadLetterPage

log = logging.getLogger(__name__)

ACTIONS = {"replay": "Replay", "discard": "Discard"}
MAX_SELECTION = 500


@dataclass(frozen=True)
class Outcome:
    ref: MessageRef
    done: bool
    verdict: str
    """``ok`` or the store's reason (``missing``, ``state:delivered``, ...)."""

    @property
    def message_id(self) -> str:
        return self.ref.id

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


def find_dead_letters(
    dispatcher: Dispatcher,
    where: DeadLetterFilter,
    *,
    limit: int = 100,
    offset: int = 0,
    scan_limit: int = 10_000,
) -> DeadLetterPage:
    """Dead letters matching ``where``, newest first. A client filter narrows the search in
    Redis; the error code is read from each record, so at most ``scan_limit`` dead letters
    of the time range (from ``offset`` on) are looked at per call."""
    found: list[DeadLetter] = []
    scanned = offset
    first_died: float | None = None

    def page(size: int, at: int) -> list[DeadLetter]:
        return dispatcher.dead_letters(
            size, at, namespace=where.client, since=where.since, until=where.until,
            newest_first=True,
        )  # fmt: skip

    while len(found) < limit and scanned - offset < scan_limit:
        chunk_size = min(500, scan_limit - (scanned - offset))
        chunk = page(chunk_size, scanned)
        if not chunk:
            return DeadLetterPage(found, scanned, exhausted=True, first_died=first_died)
        if first_died is None:
            first_died = chunk[0].diedAt
        for letter in chunk:
            scanned += 1
            if where.matches(letter):
                found.append(letter)
                if len(found) == limit:
                    break
    more = page(1, scanned)
    return DeadLetterPage(found, scanned, exhausted=not more, first_died=first_died)


def parse_ids(values: list[str]) -> tuple[list[MessageRef], str]:
    """The selected messages, each ``<client>:<getMessageId>`` (a bare id is in the default
    namespace), deduplicated, in order, and what is wrong with them, if anything."""
    members = list(dict.fromkeys(value.strip() for value in values if value.strip()))
    if not members:
        return [], "select at least one message"
    refs = [MessageRef.parse(member) for member in members[:MAX_SELECTION]]
    if len(members) > MAX_SELECTION:
        return refs, f"select at most {MAX_SELECTION} messages at once"
    bad = [
        r
        for r in refs
        if not (ID_PATTERN.fullmatch(r.id) and NAMESPACE_PATTERN.fullmatch(r.namespace))
    ]
    if bad:
        return [r for r in refs if r not in bad], f"not a getMessageId: {bad[0].member[:80]!r}"
    return refs, ""


def apply_action(
    dispatcher: Dispatcher, action: str, refs: list[MessageRef], user: str
) -> list[Outcome]:
    """Replay or discard each message; one outcome each, in order (blocking: run in a thread)."""
    outcomes: list[Outcome] = []
    for ref in refs:
        verdict: str
        if action == "replay":
            verdict = dispatcher.replay(ref, by=f"{user} (console)")
        else:
            verdict = dispatcher.discard_dead_letter(ref, by=f"{user} (console)")
        outcomes.append(Outcome(ref, verdict == "ok", verdict))
    done = sum(o.done for o in outcomes)
    log.info("console: %s chose %s for %d messages: %d done", user, action, len(refs), done)
    return outcomes
