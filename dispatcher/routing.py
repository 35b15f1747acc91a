"""How the message center picks a message's channel: one pure function at submit.

A client's routing (its ``DISPATCHER_CLIENTS`` entry, else ``DISPATCHER_ROUTING``)
is an ordered list of rules and a default channel. The first rule that matches
the message names the channel; a submitted ``channelType`` is a hint, honoured
only when a rule that matches the message names that channel. The chosen
channel must carry the message's type, else the submit is refused (400): a
message is never accepted and then failed for its channel. docs/channels.md,
"How the center picks a channel", has the rules and examples.

This module is read by ``dispatcher/config.py``: it imports no settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatcher.channels import ChannelSpec, registry
from dispatcher.errors import ConfigurationError, FieldError, InvalidMessage

if TYPE_CHECKING:
    from dispatcher.config import Settings
    from dispatcher.models import Message

ExtValue = str | int | float | bool | None


class RouteRule(BaseModel):
    """One rule: every condition given must hold (none given: every message matches)."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="the channel's name, e.g. easemob or wechat")
    to: str | None = Field(default=None, description="regular expression the whole `to` matches")
    message_types: list[int] | None = Field(default=None, min_length=1)
    ext: dict[str, ExtValue] | None = Field(
        default=None, description="ext keys the message must have; a non-null value must equal"
    )

    @field_validator("to")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a regular expression: {exc}") from None
        return value

    @cached_property
    def _to(self) -> re.Pattern[str] | None:
        return None if self.to is None else re.compile(self.to)

    def matches(self, message: Message, ext: dict[str, Any]) -> bool:
        if self.message_types is not None and int(message.messageType) not in self.message_types:
            return False
        if self._to is not None and any(
            self._to.fullmatch(name) is None for name in message.recipients
        ):
            return False
        if self.ext:
            for key, wanted in self.ext.items():
                if key not in ext or (wanted is not None and ext[key] != wanted):
                    return False
        return True


class Routing(BaseModel):
    """A client's routing: ordered rules, then the default channel."""

    model_config = ConfigDict(extra="forbid")

    default: str | None = Field(
        default=None,
        description="channel when no rule matches; unset: the lowest channelType carrying the type",
    )
    rules: list[RouteRule] = Field(default_factory=list)

    def channel_names(self) -> set[str]:
        names = {rule.channel for rule in self.rules}
        return names | {self.default} if self.default else names


@dataclass(frozen=True, slots=True)
class Decision:
    """The channel a message goes through, and whether its hint was set aside."""

    channel: ChannelSpec
    hint_ignored: bool = False


def route(routing: Routing | None, message: Message) -> Decision:
    """The channel of ``message`` under ``routing`` (pure: no I/O, no settings).

    Raises InvalidMessage when the chosen channel cannot carry the message's type.
    """
    channels = registry()
    hint = message.channelType
    hinted = channels.channel_types.get(hint) if hint is not None else None
    chosen: str | None = None
    if routing is not None and routing.rules:
        ext = message.ext.model_dump(exclude_unset=True) if message.ext is not None else {}
        for rule in routing.rules:
            if not rule.matches(message, ext):
                continue
            if chosen is None:
                chosen = rule.channel
            if hinted is None or rule.channel == hinted:
                chosen = rule.channel
                break
    if chosen is None and routing is not None:
        chosen = routing.default
    spec = channels.get(chosen) if chosen else channels.for_message(message)
    if int(message.messageType) not in spec.carries:
        kind = message.messageType
        raise InvalidMessage(
            [
                FieldError(
                    "messageType",
                    f"messageType {int(kind)} ({kind.name.lower()}) cannot be sent through the "
                    f"{spec.name} channel, which the message center chose for this message",
                )
            ]
        )
    if message.fans_out and not spec.fans_out:
        raise InvalidMessage(
            [
                FieldError(
                    "to",
                    f"a list of recipients cannot be sent through the {spec.name} channel, "
                    "which the message center chose for this message: name one recipient",
                )
            ]
        )
    return Decision(spec, hint_ignored=hinted is not None and hinted != spec.name)


def check_routing(routing: Routing, where: str) -> None:
    """Raise ConfigurationError when ``routing`` names a channel that is not registered."""
    known = {spec.name for spec in registry().channels}
    unknown = sorted(routing.channel_names() - known)
    if unknown:
        raise ConfigurationError(
            f"{where} routes to unknown channels {unknown}; known: {sorted(known)}"
        )


def routing_by_client(settings: Settings) -> dict[str, Routing | None]:
    """Each client's routing (its own, else DISPATCHER_ROUTING), checked against the registry."""
    if settings.routing is not None:
        check_routing(settings.routing, "DISPATCHER_ROUTING")
    found: dict[str, Routing | None] = {}
    for name, client in settings.clients.items():
        if client.routing is not None:
            check_routing(client.routing, f"client {name!r}")
        found[name] = client.routing or settings.routing
    return found
