"""What ``dispatcher send`` builds from its options: the message type by name, the
``messageInfo`` fields by option, the recipients, and JSON objects given on the command
line; the settings every command loads and the options of those that can go through
the HTTP API (``--api``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from dispatcher.config import Settings

if TYPE_CHECKING:
    from dispatcher.client import Client

TYPE_NAMES = {
    "text": 1,
    "image": 2,
    "voice": 3,
    "video": 4,
    "location": 5,
    "cmd": 6,
    "news": 7,
    "custom-news": 8,
    "template": 9,
    "extension": 10,
}


def message_info(type_name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The ``messageInfo`` of the options given (``None`` for an option left out)."""
    names = {
        "text": "textMessage",
        "image": "imageMessage",
        "voice": "voiceMessage",
        "video": "videoMessage",
        "thumb": "thumbMessage",
        "lat": "latitude",
        "lng": "longitude",
        "address": "address",
        "action": "action",
        "title": "title",
        "url": "url",
        "pic_url": "picUrl",
        "description": "description",
    }
    return {names[k]: v for k, v in fields.items() if v is not None and k in names}


def recipients_of(values: tuple[str, ...]) -> str | list[str]:
    """``to`` of repeated, comma-separated ``--to``: one id as a string (the seed's
    shape), several as a list (docs/api.md, "Fan-out")."""
    ids = [part.strip() for value in values for part in value.split(",")]
    return ids[0] if len(ids) == 1 else ids


def json_object(text: str | None, option: str) -> dict[str, Any]:
    """The JSON object an option holds ({} when it is not given)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=option) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=option)
    return value


def load_settings() -> Settings:
    """The settings, or a one-line error naming what is wrong with them."""
    try:
        return Settings()
    except ValueError as exc:
        raise click.ClickException(f"bad DISPATCHER_* configuration: {exc}") from None


def remote_options(func: Any) -> Any:
    """``--api``, ``--client``, ``--secret``, ``--channel``: the options of a command that
    talks to the HTTP API, or to Redis directly without ``--api``."""
    options = [
        click.option("--api", "api_url", help="Talk to the HTTP API at this URL instead of Redis directly."),
        click.option("--client", "client_id", help="Client id: signs as it with --api; without, whose messages (namespace)."),
        click.option("--secret", help="Client secret for signing (with --api)."),
        click.option("--channel", default="", help="channel query value (with --api)."),
    ]  # fmt: skip
    for option in reversed(options):
        func = option(func)
    return func


def remote_client(api_url: str, client_id: str | None, secret: str | None, channel: str) -> Client:
    """The signing client of ``--api`` (with ``--client``, ``--secret``, ``--channel``)."""
    from dispatcher.client import Client

    return Client(api_url, client_id or "", secret or "", channel=channel)
