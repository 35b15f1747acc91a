"""The WeChat Official Account channel (channelType 2), as the registry knows it.

A message goes out through its client's own WeChat app (the ``wechat`` block of
its ``DISPATCHER_CLIENTS`` entry) or else the ``DISPATCHER_WECHAT_*`` app. Each
app has its own :class:`~dispatcher.channels.wechat_send.WeChatSender`: its own
token, limiter, quotas and media cache, so two apps never throttle or knock out
each other. ``docs/channels.md`` has the design; the receipts WeChat pushes back
arrive through :mod:`dispatcher.channels.wechat_receipts`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import redis

from dispatcher.channels.base import ChannelSpec, Origin, Receipt, config_block
from dispatcher.channels.wechat_config import WeChatConfig
from dispatcher.channels.wechat_mapping import NAME, SUPPORTED_TYPES, check_message
from dispatcher.channels.wechat_send import WeChatSender
from dispatcher.errors import ConfigurationError
from dispatcher.models import MessageType

if TYPE_CHECKING:
    from fastapi import APIRouter

    from dispatcher.config import Settings
    from dispatcher.models import Message
    from dispatcher.ratelimit import Prepay
    from dispatcher.store import StatusStore


def global_app(settings: Settings) -> WeChatConfig | None:
    """The ``DISPATCHER_WECHAT_*`` app, or None when no appid is set."""
    if settings.wechat_appid is None:
        return None
    return config_block(settings, NAME, WeChatConfig)


def app_for(settings: Settings, client: str | None) -> WeChatConfig:
    """The app that sends ``client``'s messages: its own, else the global one."""
    entry = settings.clients.get(client) if client else None
    if entry is not None and entry.wechat is not None:
        return entry.wechat
    app = global_app(settings)
    if app is None:
        raise ConfigurationError(
            f"no WeChat app for client {client!r}: give it a 'wechat' block in "
            "DISPATCHER_CLIENTS or set DISPATCHER_WECHAT_APPID and DISPATCHER_WECHAT_SECRET"
        )
    return app


def apps(settings: Settings) -> dict[str, WeChatConfig]:
    """Every configured app by appid (the receipt endpoint verifies pushes per app)."""
    found = {c.wechat.appid: c.wechat for c in settings.clients.values() if c.wechat is not None}
    app = global_app(settings)
    if app is not None:
        found[app.appid] = app
    return found


def check(settings: Settings, message_id: str, message: Message, client: str | None) -> None:
    """At submit: what the client's app would refuse (types, sizes, formats, templates)."""
    check_message(message, app_for(settings, client).templates)


class WeChatChannel:
    """The registry's WeChat channel: one sender per client's app, opened on first use."""

    name = NAME

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self._senders: dict[str | None, WeChatSender] = {}
        self._lock = threading.Lock()

    def sender(self, client: str | None) -> WeChatSender:
        """The sender of ``client``'s app (clients of the global app share one)."""
        entry = self.settings.clients.get(client) if client else None
        owner = client if entry is not None and entry.wechat is not None else None
        sender = self._senders.get(owner)
        if sender is None:
            with self._lock:
                sender = self._senders.get(owner)
                if sender is None:
                    sender = WeChatSender(app_for(self.settings, owner), self.redis)
                    self._senders[owner] = sender
        return sender

    def send(
        self,
        message_id: str,
        message: Message,
        *,
        prepaid: bool = False,
        origin: Origin | None = None,
    ) -> Receipt:
        sender = self.sender(origin.client if origin is not None else None)
        return sender.send(message_id, message, origin=origin)

    def rate_prepay(self) -> Prepay | None:
        return None  # each call takes its slot of its own app's budget

    def close(self) -> None:
        for sender in self._senders.values():
            sender.close()


def _configured(settings: Settings) -> bool:
    return settings.wechat_appid is not None or any(
        c.wechat is not None for c in settings.clients.values()
    )


def _routes(settings: Settings, store: StatusStore) -> APIRouter:
    from dispatcher.channels.wechat_receipts import receipt_routes  # FastAPI: the API's only

    return receipt_routes(settings, store)


CHANNEL = ChannelSpec(
    name=NAME,
    channel_type=2,
    carries=frozenset(int(t) for t in SUPPORTED_TYPES),
    media=frozenset(int(t) for t in (MessageType.IMAGE, MessageType.VOICE, MessageType.VIDEO)),
    configured=_configured,
    check_size=check,
    open=WeChatChannel,
    routes=_routes,
)
