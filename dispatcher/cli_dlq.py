"""``dispatcher dlq``: dead letters, every client's or one client's (``--client``)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from dispatcher.cli_message import load_settings


@click.group()
def dlq() -> None:
    """Dead letters: messages whose retries ran out."""


_CLIENT_OPTION = click.option(
    "--client", "client_id", help="Only this client's dead letters (default: every client's)."
)


@dlq.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
@_CLIENT_OPTION
def dlq_list(limit: int, offset: int, client_id: str | None) -> None:
    """List dead messages (JSON lines: getMessageId, diedAt, lastError, client)."""
    from dispatcher.producer import Dispatcher

    dispatcher = Dispatcher(load_settings())
    for letter in dispatcher.dead_letters(limit=limit, offset=offset, namespace=client_id):
        line = letter.model_dump(mode="json")
        line["diedAt"] = _iso_time(letter.diedAt)
        click.echo(json.dumps(line, ensure_ascii=False))


def _iso_time(unix_seconds: float) -> str:
    """ISO 8601 in UTC, written as ``status`` writes its times (pydantic's JSON form)."""
    from pydantic import TypeAdapter

    moment = datetime.fromtimestamp(unix_seconds, tz=UTC)
    return str(TypeAdapter(datetime).dump_python(moment, mode="json"))


@dlq.command("replay")
@click.argument("message_ids", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter (of --client).")
@_CLIENT_OPTION
def dlq_replay(message_ids: tuple[str, ...], replay_all: bool, client_id: str | None) -> None:
    """Send dead messages round again (all attempts restored): the ids are of --client's
    messages (default: the in-process producers')."""
    from dispatcher.ids import MessageRef
    from dispatcher.producer import Dispatcher

    d = Dispatcher(load_settings(), namespace=client_id)
    ids = [MessageRef(d.namespace, message_id) for message_id in message_ids]
    if replay_all:
        ids += [letter.ref for letter in d.dead_letters(limit=1_000_000, namespace=client_id)]
    if not ids:
        raise click.UsageError("name message ids or pass --all")
    failures = 0
    with (
        click.progressbar(ids, label="replaying", file=sys.stderr)
        if len(ids) > 20
        else _nullbar(ids) as bar
    ):
        for ref in bar:
            verdict = d.replay(ref)
            if verdict != "ok":
                failures += 1
                click.echo(f"{ref.id} of {ref.namespace}: not replayed ({verdict})", err=True)
    click.echo(f"replayed {len(ids) - failures} of {len(ids)}")
    if failures:
        sys.exit(1)


class _nullbar:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __enter__(self) -> list[Any]:
        return self.items

    def __exit__(self, *exc: object) -> None:
        return None
