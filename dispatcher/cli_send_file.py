"""``dispatcher send --file messages.jsonl``: one message per line, sent in batches.

Each line is a ``handleBasicMessage`` body. Lines are sent in batches (docs/api.md,
"Batch submit") through the HTTP API or straight to Redis, with a progress bar on
stderr. Every accepted line prints ``<line>\\t<getMessageId>`` on stdout; every refused
line is reported on stderr with its number and each broken field, after the bar. A
line that is not a JSON object is refused without being sent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

from dispatcher.errors import DispatcherError, FieldError, InvalidMessage, RateLimited
from dispatcher.limits import MAX_BATCH_MESSAGES

SubmitMany = Callable[[Sequence[dict[str, Any]]], Sequence["str | DispatcherError"]]

DEFAULT_BATCH = 100


@dataclass
class Report:
    """What a file's lines came to."""

    accepted: int = 0
    refused: list[tuple[int, DispatcherError]] = field(default_factory=list)


def read_lines(source: TextIO) -> Iterator[tuple[int, dict[str, Any] | DispatcherError]]:
    """(line number, message or why it is none) for each non-blank line."""
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            yield number, InvalidMessage([_body_error(f"is not valid JSON ({exc})")])
            continue
        if not isinstance(value, dict):
            yield number, InvalidMessage([_body_error("must be a JSON object")])
            continue
        yield number, value


def _body_error(text: str) -> FieldError:
    return FieldError("body", text)


def send_lines(
    lines: Sequence[tuple[int, dict[str, Any] | DispatcherError]],
    submit_many: SubmitMany,
    batch_size: int,
    out: Callable[[str], None],
    report: Report,
) -> None:
    """Send the messages in batches of ``batch_size`` with a progress bar, printing each
    accepted line's id as its batch is answered; a refusal of a whole batch propagates
    (``report`` then says how far it got)."""
    pending: list[tuple[int, dict[str, Any]]] = []

    def send(bar: Any) -> None:
        results = submit_many([message for _, message in pending])
        for (number, _), result in zip(pending, results, strict=True):
            if isinstance(result, DispatcherError):
                report.refused.append((number, result))
            else:
                report.accepted += 1
                out(f"{number}\t{result}")
        bar.update(len(pending))
        pending.clear()

    with click.progressbar(length=len(lines), label="sending", file=sys.stderr) as bar:
        for number, message in lines:
            if isinstance(message, DispatcherError):
                report.refused.append((number, message))
                bar.update(1)
                continue
            pending.append((number, message))
            if len(pending) == batch_size:
                send(bar)
        if pending:
            send(bar)


def describe(number: int, error: DispatcherError) -> list[str]:
    """The lines that report one refused line: its number and each broken field."""
    if isinstance(error, InvalidMessage):
        return [f"line {number}: {e.field}: {e.error}" for e in error.errors]
    if isinstance(error, RateLimited):
        return [f"line {number}: rate limited; send it again after {error.retry_after:g} s"]
    return [f"line {number}: {error}"]


def check_batch_size(value: int) -> int:
    if not 1 <= value <= MAX_BATCH_MESSAGES:
        raise click.BadParameter(f"must be 1 to {MAX_BATCH_MESSAGES}", param_hint="--batch-size")
    return value


def send_file(source: TextIO, batch_size: int, remote: Any, client_id: str | None) -> None:
    """The ``send --file`` command: through ``remote`` (an HTTP :class:`Client`) or, when
    None, straight to Redis as ``client_id``; exits 1 when any line was refused."""
    check_batch_size(batch_size)
    lines = list(read_lines(source))
    if remote is not None:
        submit_many: SubmitMany = remote.submit_many
    else:
        from dispatcher.cli_message import load_settings
        from dispatcher.producer import Dispatcher

        producer = Dispatcher(load_settings(), namespace=client_id)

        def submit_many(batch: Sequence[dict[str, Any]]) -> Sequence[str | DispatcherError]:
            return producer.submit_many(batch, client=client_id)

    report = Report()
    try:
        send_lines(lines, submit_many, batch_size, click.echo, report)
    except DispatcherError as exc:
        stopped = f"{report.accepted} lines accepted before it (their ids above)"
        raise click.ClickException(f"stopped: {exc}; {stopped}") from None
    finally:
        for number, error in sorted(report.refused, key=lambda refused: refused[0]):
            for text in describe(number, error):
                click.echo(text, err=True)
    click.echo(f"{report.accepted} accepted, {len(report.refused)} refused", err=True)
    if report.refused:
        sys.exit(1)
