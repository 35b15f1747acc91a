"""What a delivery channel is, and what it declares to the registry (docs/extending.md).

A channel module under ``dispatcher/channels/`` exports ``CHANNEL``, a
:class:`ChannelSpec`: its name, the seed's ``channelType`` number, the message
types it carries, which of them need media resolved first, its configuration
block, its size check, and how to open the :class:`Channel` that sends. The
registry finds it there; nothing else in the package names a channel.

A channel's ``send`` raises :class:`~dispatcher.errors.DeliveryError`
(retryable or not) and returns a :class:`Receipt` on success.

``dispatcher/config.py`` imports channels' configuration models (a client's own
WeChat app), so this package reads :class:`~dispatcher.config.Settings` for
annotations only, never at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from dispatcher.errors import ConfigurationError
from dispatcher.ids import MessageRef

if TYPE_CHECKING:
    import redis
    from fastapi import APIRouter

    from dispatcher.config import Settings
    from dispatcher.models import Message
    from dispatcher.ratelimit import Prepay
    from dispatcher.store import StatusStore
    from dispatcher.store.recipients import RecipientCounts


@dataclass(frozen=True)
class Receipt:
    """What the provider answered to an accepted message."""

    provider_message_id: str | None
    notes: list[str] = field(default_factory=list)
    recipients: RecipientCounts | None = None
    """A multi-recipient message's counts after the attempt (dispatcher/fanout.py)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Whose message a send delivers: its reference and the client that submitted it
    (a channel may hold an account per client, as WeChat does)."""

    ref: MessageRef
    client: str | None = None
    checkpoint: Callable[[float], None] | None = None
    """Called before each provider call with the longest that call may take: the attempt
    keeps its lease for that long or raises :class:`~dispatcher.errors.LeaseLost`."""
    app: str | None = None
    """The provider app recorded at submit (:attr:`ChannelSpec.app_for`); None: older
    records, or a channel that records none."""

    def before_call(self, longest: float) -> None:
        if self.checkpoint is not None:
            self.checkpoint(longest)


class Channel(Protocol):
    name: str

    def send(
        self,
        message_id: str,
        message: Message,
        *,
        prepaid: bool = False,
        origin: Origin | None = None,
    ) -> Receipt:
        """Deliver one message; raise DeliveryError on failure.

        ``prepaid``: the lease script already took this message's rate slot for the
        channel's :meth:`rate_prepay`. ``origin``: the message's reference and client
        (None: the default namespace, no client).
        """
        ...

    def rate_prepay(self) -> Prepay | None:
        """A rate slot the lease script may take for the send (one round trip fewer), if any."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ChannelSpec:
    """A channel as the registry knows it (see the module docstring)."""

    name: str
    channel_type: int
    """The seed's ``channelType`` number of this channel."""
    carries: frozenset[int]
    """Message types this channel can deliver."""
    media: frozenset[int]
    """Message types whose media must be resolved (URLs, sizes) before the send."""
    configured: Callable[[Settings], bool]
    """Whether the channel's configuration block is filled in (workers open only those)."""
    check_size: Callable[[Settings, str, Message, str | None], None]
    """At submit, with the submitting client (or None): raise InvalidMessage (MessageTooLarge
    for sizes) when the provider would refuse the message."""
    open: Callable[[Settings, redis.Redis], Channel]
    routes: Callable[[Settings, StatusStore], APIRouter] | None = None
    """HTTP endpoints the provider calls back (WeChat's receipts), mounted by the API when
    the channel is configured."""
    fans_out: bool = False
    """Whether the channel delivers a message whose ``to`` is a list (dispatcher/fanout.py)."""
    recall: Callable[[Settings, redis.Redis, RecallRequest], RecallAnswer] | None = None
    """Take a delivered copy back from its recipient, within the provider's recall window
    (None: the provider has no recall)."""
    app_for: Callable[[Settings, str | None], str] | None = None
    """The name of the provider app that sends a client's (or None's) messages, recorded
    with the message at submit so that a configuration change does not move messages
    already accepted (None: the channel records no app)."""


class RecallVerdict(StrEnum):
    """What a provider said to a recall. ``NOT_FOUND``: it no longer has the message
    (expired, or recalled already); ``FAILED``: any other refusal or error."""

    RECALLED = "recalled"
    WINDOW_PASSED = "window_passed"
    NOT_ENABLED = "not_enabled"
    NOT_FOUND = "not_found"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RecallRequest:
    """One delivered copy to take back: the provider's id for it and its recipient."""

    provider_message_id: str
    to: str
    target_type: str
    sender: str
    delivered_at: datetime
    app: str | None = None
    """The provider app the message went through (recorded at submit)."""


@dataclass(frozen=True, slots=True)
class RecallAnswer:
    verdict: RecallVerdict
    detail: str


Block = TypeVar("Block", bound=BaseModel)


def config_block(settings: Settings, prefix: str, model: type[Block]) -> Block:
    """A channel's settings block: the ``<prefix>_*`` settings as ``model``'s fields.

    Raises ConfigurationError naming the ``DISPATCHER_*`` variables that are missing.
    """
    values = {
        name.removeprefix(f"{prefix}_"): getattr(settings, name)
        for name in type(settings).model_fields
        if name.startswith(f"{prefix}_") and getattr(settings, name) is not None
    }
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        missing = [f"DISPATCHER_{prefix.upper()}_{str(e['loc'][0]).upper()}" for e in exc.errors()]
        raise ConfigurationError(
            f"{prefix.capitalize()} is not configured: set {', '.join(missing)}"
        ) from None
