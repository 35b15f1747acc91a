"""What ``dispatcher send`` builds from its options: the message type by name, the
``messageInfo`` fields by option, and JSON objects given on the command line; and the
settings every command loads."""

from __future__ import annotations

import json
from typing import Any

import click

from dispatcher.config import Settings

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
