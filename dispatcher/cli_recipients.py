"""``dispatcher message recipients``: a multi-recipient message's recipients, one JSON
line each (docs/api.md, "Fan-out"), through the HTTP API (``--api``) or Redis directly."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator

import click

from dispatcher.cli_message import load_settings, remote_client, remote_options
from dispatcher.errors import DispatcherError, NotFound
from dispatcher.store.recipients import RecipientOutcome, RecipientState


@click.group()
def message() -> None:
    """One message in detail."""


@message.command()
@click.argument("message_id")
@click.option(
    "--state",
    type=click.Choice([s.value for s in RecipientState]),
    help="Only the recipients in this state.",
)
@remote_options
@click.option("--owner", help="With --api, an admin client reads this client's message.")
def recipients(
    message_id: str,
    state: str | None,
    api_url: str | None,
    client_id: str | None,
    secret: str | None,
    channel: str,
    owner: str | None,
) -> None:
    """Print each recipient of a multi-recipient message in the order of its ``to``, as
    JSON lines: to, state, providerMessageId (delivered) or error (failed). Exit 1 when
    the id is unknown or the message has one recipient."""
    if api_url:
        api = remote_client(api_url, client_id, secret, channel)
        found: Iterator[RecipientOutcome] = api.recipients(message_id, state, owner=owner)
    else:
        from dispatcher.producer import Dispatcher

        found = Dispatcher(load_settings(), namespace=client_id).recipients(message_id, state)
    try:
        for outcome in found:
            click.echo(json.dumps(outcome.public(), ensure_ascii=False))
    except NotFound:
        click.echo(f"no multi-recipient message {message_id}", err=True)
        sys.exit(1)
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
