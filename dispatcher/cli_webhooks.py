"""``dispatcher webhooks ...``: endpoints and their health, dead letters, replay, enable
(docs/webhooks.md, "Operators"). Talks to Redis directly, like ``dispatcher dlq``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _store_and_settings() -> tuple[Any, Any]:
    from dispatcher.cli_message import load_settings
    from dispatcher.connections import redis_client
    from dispatcher.webhooks.outbox import WebhookStore

    settings = load_settings()
    return WebhookStore(redis_client(settings, max_connections=2)), settings


@click.group()
def webhooks() -> None:
    """Status webhooks: endpoints, their dead letters, replay."""


@webhooks.command("endpoints")
def endpoints() -> None:
    """Each configured endpoint with its health (JSON lines; never the secret)."""
    from dispatcher.webhooks import admin

    store, settings = _store_and_settings()
    for view in admin.endpoints(settings, store):
        click.echo(json.dumps(view, ensure_ascii=False))


@webhooks.command("enable")
@click.argument("endpoint_id")
def enable(endpoint_id: str) -> None:
    """Enable a disabled endpoint (then replay its dead letters)."""
    store, settings = _store_and_settings()
    if endpoint_id not in settings.webhook_subscriptions().endpoints:
        raise click.ClickException(f"no configured endpoint {endpoint_id}")
    was = store.enable(endpoint_id)
    click.echo(f"{endpoint_id} enabled" if was else f"{endpoint_id} was not disabled")


@webhooks.command("dead")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
def dead(limit: int, offset: int) -> None:
    """Dead webhook deliveries, newest first (JSON lines with the last error)."""
    from dispatcher.webhooks import admin

    store, _ = _store_and_settings()
    for letter in admin.dead_letters(store, limit, offset):
        click.echo(json.dumps(letter, ensure_ascii=False))


@webhooks.command("replay")
@click.argument("deliveries", nargs=-1)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead delivery.")
def replay(deliveries: tuple[str, ...], replay_all: bool) -> None:
    """Send dead deliveries (<endpoint>:<webhook id>) again, same id and body."""
    from dispatcher.webhooks import admin

    if not deliveries and not replay_all:
        raise click.UsageError("name deliveries or pass --all")
    store, _ = _store_and_settings()
    result = admin.replay(store, list(deliveries), replay_all)
    for skipped in result["skipped"]:
        click.echo(f"{skipped['delivery']}: not replayed ({skipped['reason']})", err=True)
    click.echo(f"replayed {len(result['replayed'])}")
    if result["skipped"]:
        sys.exit(1)
