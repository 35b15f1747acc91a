"""Dead-letter filters from a query string, the search, and the operator's actions: replay or
discard a selection of dead letters, cancel a message not sent yet, recall a delivered one."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from dispatcher.errors import ApiError
from dispatcher.ids import ID_PATTERN, NAMESPACE_PATTERN, MessageRef
from dispatcher.producer import Dispatcher
from dispatcher.record import DeadLetter, DeadLetterFilter, DeadLetterPage
from dispatcher.store.recovery import DiscardOutcome, ReplayOutcome
from dispatcher.store.withdraw import CancelOutcome

log = logging.getLogger(__name__)

MAX_SELECTION = 500
GONE = "no such message (expired?)"


@dataclass(frozen=True)
class Action:
    """An operator's action: where it is offered and what the pages say of it."""

    name: str
    verb: str
    done_verb: str
    section: str
    """``dead`` (a selection of dead letters) or ``messages`` (one message's page)."""
    effect: str
    """What happens to each message, said before it is confirmed."""


ACTIONS = {
    action.name: action
    for action in (
        Action(
            "replay", "Replay", "Replayed", "dead",
            "Each message goes back to queued with its attempts reset and is delivered again.",
        ),
        Action(
            "discard", "Discard", "Discarded", "dead",
            "Each message leaves the dead-letter list for good; its record stays "
            "(state dead) until it expires.",
        ),
        Action(
            "cancel", "Cancel", "Cancelled", "messages",
            "A message not sent yet is never sent; one an attempt is sending right now "
            "keeps that attempt's outcome.",
        ),
        Action(
            "recall", "Recall", "Recalled", "messages",
            "The provider takes the delivered message back from its recipient, within "
            "its recall window.",
        ),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    ref: MessageRef
    done: bool
    explanation: str

    @property
    def message_id(self) -> str:
        return self.ref.id


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
    dispatcher: Dispatcher, action: Action, refs: list[MessageRef], user: str
) -> list[Outcome]:
    """Apply ``action`` to each message; one outcome each, in order (blocking: run in a
    thread)."""
    run = _RUNNERS[action.name]
    outcomes = [run(dispatcher, ref, f"{user} (console)") for ref in refs]
    done = sum(o.done for o in outcomes)
    log.info("console: %s chose %s for %d messages: %d done", user, action.name, len(refs), done)
    return outcomes


def _replay(dispatcher: Dispatcher, ref: MessageRef, by: str) -> Outcome:
    verdict = dispatcher.replay(ref, by=by)
    return Outcome(ref, verdict is ReplayOutcome.OK, _dead_letter_explanation(verdict))


def _discard(dispatcher: Dispatcher, ref: MessageRef, by: str) -> Outcome:
    verdict = dispatcher.discard_dead_letter(ref, by=by)
    return Outcome(ref, verdict is DiscardOutcome.OK, _dead_letter_explanation(verdict))


def _dead_letter_explanation(verdict: ReplayOutcome | DiscardOutcome) -> str:
    if verdict.value == "ok":
        return "done"
    if verdict.value == "missing":
        return GONE
    if verdict.value == "not_listed":
        return "already discarded"
    return f"not dead any more: {verdict.value.removeprefix('state:')}"


def _cancel(dispatcher: Dispatcher, ref: MessageRef, by: str) -> Outcome:
    result = dispatcher.cancel(ref, by=by)
    if result.outcome is CancelOutcome.CANCELLED:
        return Outcome(ref, True, f"cancelled (it was {result.was})")
    if result.outcome is CancelOutcome.IN_FLIGHT:
        return Outcome(ref, False, "an attempt is sending it now: that attempt's outcome stands")
    if result.outcome is CancelOutcome.ALREADY_DONE:
        return Outcome(ref, False, f"already {result.state}: nothing to cancel")
    return Outcome(ref, False, GONE)


def _recall(dispatcher: Dispatcher, ref: MessageRef, by: str) -> Outcome:
    try:
        result = dispatcher.recall(ref, by=by)
    except ApiError as exc:  # NotFound, RecallRefused (the reason), Unavailable
        return Outcome(ref, False, exc.message)
    return Outcome(ref, True, f"{result.state}")


_RUNNERS = {"replay": _replay, "discard": _discard, "cancel": _cancel, "recall": _recall}
