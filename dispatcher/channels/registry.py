"""The channel registry: every module under ``dispatcher/channels/`` exporting ``CHANNEL``.

Adding a channel is adding its module (docs/extending.md); the registry finds
it on first use. The message center, not the caller, picks the channel
(:mod:`dispatcher.routing`); without routing configured, the registered channel
with the lowest ``channelType`` that carries the message's type.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from dispatcher.channels.base import Channel, ChannelSpec
from dispatcher.plugins import discover

if TYPE_CHECKING:
    import redis

    from dispatcher.config import Settings
    from dispatcher.models import Message


@dataclass(frozen=True)
class Registry:
    channels: tuple[ChannelSpec, ...]
    """Every registered channel, by ``channelType``."""

    def get(self, name: str) -> ChannelSpec:
        for spec in self.channels:
            if spec.name == name:
                return spec
        raise KeyError(f"no channel named {name!r}")

    @property
    def channel_types(self) -> dict[int, str]:
        """``channelType`` number -> channel name."""
        return {spec.channel_type: spec.name for spec in self.channels}

    def for_message(self, message: Message) -> ChannelSpec:
        """The channel that delivers ``message`` when no routing says otherwise."""
        for spec in self.channels:
            if int(message.messageType) in spec.carries:
                return spec
        raise LookupError(f"no channel carries message type {int(message.messageType)}")


@cache
def registry() -> Registry:
    """The channels of this installation, found once per process."""
    specs = discover("dispatcher.channels", "CHANNEL", ChannelSpec)
    return Registry(tuple(sorted(specs, key=lambda spec: spec.channel_type)))


def open_channels(settings: Settings, client: redis.Redis) -> dict[str, Channel]:
    """The configured channels, opened for sending (a worker process's set)."""
    return {
        spec.name: spec.open(settings, client)
        for spec in registry().channels
        if spec.configured(settings)
    }
