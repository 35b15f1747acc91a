"""Delivery channels, as plug-ins found by :func:`registry` (docs/extending.md)."""

from __future__ import annotations

from dispatcher.channels.base import Channel, ChannelSpec, Origin, Receipt, config_block
from dispatcher.channels.registry import Registry, open_channels, registry

__all__ = [
    "Channel",
    "ChannelSpec",
    "Origin",
    "Receipt",
    "Registry",
    "config_block",
    "open_channels",
    "registry",
]
