"""dispatcher: validate, queue and deliver chat messages, and track their status.

Public surface::

    from dispatcher import Dispatcher
    d = Dispatcher.from_env()
    mid = d.submit({"messageType": 1, "from": "u1", "to": "u2",
                    "messageInfo": {"textMessage": "hi"}})
    d.status(mid)
"""

from dispatcher.config import Settings
from dispatcher.errors import (
    Conflict,
    DeliveryError,
    DispatcherError,
    FieldError,
    InvalidMessage,
    MediaError,
    MessageTooLarge,
    ProviderError,
    Unavailable,
)
from dispatcher.models import Message, MessageType, parse_message
from dispatcher.producer import Dispatcher
from dispatcher.record import State, StatusRecord

__all__ = [
    "Conflict",
    "DeliveryError",
    "Dispatcher",
    "DispatcherError",
    "FieldError",
    "InvalidMessage",
    "MediaError",
    "Message",
    "MessageTooLarge",
    "MessageType",
    "ProviderError",
    "Settings",
    "State",
    "StatusRecord",
    "Unavailable",
    "parse_message",
]
