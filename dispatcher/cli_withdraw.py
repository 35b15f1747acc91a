"""``dispatcher cancel`` and ``dispatcher recall``: take a message back (docs/api.md,
"Send later, cancel, recall")."""

from __future__ import annotations

import json
import sys

import click

from dispatcher.cli_message import load_settings
from dispatcher.errors import DispatcherError

_client = click.option(
    "--client", "client_id", help="Whose message: the client that submitted it (namespace)."
)


@click.command()
@click.argument("message_id")
@_client
def cancel(message_id: str, client_id: str | None) -> None:
    """Cancel a scheduled, queued or retrying message (exit 1 unless cancelled)."""
    from dispatcher.producer import Dispatcher
    from dispatcher.store import CancelOutcome

    try:
        result = Dispatcher(load_settings(), namespace=client_id).cancel(message_id, by="cli")
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    messages = {
        CancelOutcome.CANCELLED: f"cancelled (was {result.was})",
        CancelOutcome.IN_FLIGHT: "not cancelled: an attempt is sending it now and finishes",
        CancelOutcome.ALREADY_DONE: f"not cancelled: already {result.state}",
        CancelOutcome.NOT_FOUND: "not found",
    }
    click.echo(f"{message_id}: {messages[result.outcome]}")
    if result.outcome is not CancelOutcome.CANCELLED:
        sys.exit(1)


@click.command()
@click.argument("message_id")
@_client
def recall(message_id: str, client_id: str | None) -> None:
    """Recall a delivered message from its recipients (Easemob, within the window)."""
    from dispatcher.producer import Dispatcher
    from dispatcher.withdraw import recipients

    try:
        result = Dispatcher(load_settings(), namespace=client_id).recall(message_id, by="cli")
    except DispatcherError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"state": result.state.value, "recipients": recipients(result)}))


def register(main: click.Group) -> None:
    main.add_command(cancel)
    main.add_command(recall)
