"""Delivery channels. The message center, not the caller, picks one."""

from __future__ import annotations

from dispatcher.channels.base import Channel, Receipt
from dispatcher.models import Message

EASEMOB = "easemob"


def pick_channel(message: Message) -> str:
    """The channel name for a message. Easemob is the only channel today (SPEC §2)."""
    return EASEMOB


__all__ = ["EASEMOB", "Channel", "Receipt", "pick_channel"]
