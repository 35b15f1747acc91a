"""What a delivery channel is: something that sends one validated message.

A channel raises :class:`~dispatcher.errors.DeliveryError` (retryable or
not) and returns a :class:`Receipt` on success. Adding a channel (the seed's
struck-out WeChat, say) means one new module implementing this protocol and
one line in :func:`dispatcher.channels.pick_channel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from dispatcher.models import Message
from dispatcher.ratelimit import Prepay


@dataclass(frozen=True)
class Receipt:
    """What the provider answered to an accepted message."""

    provider_message_id: str | None
    notes: list[str] = field(default_factory=list)


class Channel(Protocol):
    name: str

    def send(self, message_id: str, message: Message, *, prepaid: bool = False) -> Receipt:
        """Deliver one message; raise DeliveryError on failure.

        ``prepaid``: the lease script already took this message's rate slot for the
        channel's :meth:`rate_prepay`.
        """
        ...

    def rate_prepay(self) -> Prepay | None:
        """A rate slot the lease script may take for the send (one round trip fewer), if any."""
        ...

    def check_size(self, message_id: str, message: Message) -> None:
        """Raise MessageTooLarge if the provider would refuse the message for its size."""
        ...

    def close(self) -> None: ...
