"""The Easemob channel (channelType 1): classic ``/messages`` sends, shared token and limiter.

:mod:`.mapping` is the pure part (body, size check, classification); this
module adds the I/O: through the message's app (:mod:`.apps`: its token shared
through Redis, its shared rate limiter with both of Easemob's dimensions, its
HTTP pools), the sends and the index of the ids Easemob gave back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from dispatcher import fanout, keys
from dispatcher.channels.base import ChannelSpec, Origin, Receipt
from dispatcher.channels.easemob.apps import (
    NAME,
    EasemobApp,
    EasemobConfig,
    app_configs,
    app_for,
    easemob_config,
)
from dispatcher.channels.easemob.mapping import (
    CALLS,
    USER_MESSAGES,
    body_size,
    build_body,
    build_msg,
    call_costs,
    check_size,
    classify,
    retry_after_seconds,
    transport_error,
)
from dispatcher.channels.easemob.recall import recall_delivered
from dispatcher.channels.easemob_apps import DEFAULT_APP
from dispatcher.channels.http import encode_body, json_or_none
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS
from dispatcher.errors import ProviderError
from dispatcher.fanout import CallAnswer, Refused
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from dispatcher.models import MEDIA_TYPES, Message, MessageType
from dispatcher.ratelimit import Prepay
from dispatcher.store.policy import StorePolicy
from dispatcher.store.recipients import RecipientStore

if TYPE_CHECKING:
    from fastapi import APIRouter

    from dispatcher.store import StatusStore

log = logging.getLogger(__name__)


class EasemobChannel:
    """Sends messages to Easemob's classic ``/messages?useMsgId=true`` endpoint, each
    through the app recorded with it at submit (:mod:`.apps`)."""

    name = NAME

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        configs = app_configs(settings)
        if not configs:
            easemob_config(settings)  # raises ConfigurationError naming what is missing
        self.settings = settings
        # Easemob's callbacks find their message through the ids a send got back.
        self.index = client if settings.easemob_callback_secret is not None else None
        self.index_ttl = settings.status_ttl
        self.lease_seconds = settings.lease_seconds
        self.apps = {
            name: EasemobApp(
                name,
                config,
                client,
                lease_seconds=settings.lease_seconds,
                prepay_types=CHANNEL.carries - CHANNEL.media,
            )
            for name, config in configs.items()
        }
        # The lease script can take one app's slot: the default app's, else the only one.
        self._prepay_app = self.apps.get(DEFAULT_APP) or next(iter(self.apps.values()))
        self.recipients = RecipientStore(client, StorePolicy.from_settings(settings))

    def app(self, origin: Origin | None) -> EasemobApp:
        """The app recorded with the message (older records: the client's app now)."""
        name = origin.app if origin is not None else None
        if name is None:
            name = app_for(self.settings, origin.client if origin is not None else None)
        return self.app_named(name)

    def app_named(self, name: str | None) -> EasemobApp:
        """The app of that name (None: the default app); ProviderError when it is not
        configured here."""
        name = name or DEFAULT_APP
        app = self.apps.get(name)
        if app is None:
            raise ProviderError(
                "app_not_configured",
                f"the Easemob app {name!r} recorded with the message is not configured "
                "on this worker (DISPATCHER_EASEMOB_APPS)",
                retryable=True,
            )
        return app

    def close(self) -> None:
        for app in self.apps.values():
            app.close()

    def rate_prepay(self) -> Prepay | None:
        """What the lease script may charge before the send (see :class:`Prepay`): one
        app's slot, for its messages only.

        None until this process holds that app's token: a send that must first fetch one
        would arrive late and bunch with the calls admitted after it (F11 in
        docs/reliability.md).
        """
        return self._prepay_app.rate_prepay()

    def send(
        self,
        message_id: str,
        message: Message,
        *,
        prepaid: bool = False,
        origin: Origin | None = None,
    ) -> Receipt:
        body = build_body(message_id, message)
        limit = self.settings.easemob_max_body_bytes
        one = encode_body({**body, "target": body["target"][:1]})
        if len(one) > limit:
            raise ProviderError(
                "message_too_large",
                f"Easemob body is {len(one)} bytes, over the limit of {limit}",
                retryable=False,
            )
        # Before each provider call (a token fetch too) the attempt keeps its lease or stops.
        before_call = origin.before_call if origin is not None else _no_checkpoint
        ref = origin.ref if origin is not None else MessageRef(DEFAULT_NAMESPACE, message_id)
        notes: list[str] = []
        app = self.app(origin)  # its own token, limiter and pools
        # A slot the lease script took is the prepaid app's (the default one).
        prepaid = prepaid and app is self._prepay_app
        if message.fans_out:

            def call(targets: list[str], paid: bool) -> CallAnswer:
                admit = self._admit_share(app, message.target_type, len(targets), paid, before_call)
                answer = self._exchange(app, {**body, "target": targets}, admit, before_call, notes)
                return self._answer_of(ref, targets, answer, origin)

            receipt = fanout.deliver(
                ref, message, store=self.recipients, send_call=call, prepaid=prepaid
            )
            return Receipt(None, receipt.notes + notes, recipients=receipt.recipients)
        costs = call_costs(message.target_type)

        def admit(first: bool) -> None:
            # A slot the lease script took (only while the token is in memory) is the
            # same slot, earlier.
            if not (first and prepaid):
                app.acquire(costs)

        answer = self._exchange(app, body, admit, before_call, notes)
        if self.index is not None and origin is not None:
            self._remember_ids(origin.ref, _target_ids(answer))
        return Receipt(_provider_message_id(answer, message.recipients[0]), notes)

    def _exchange(
        self,
        app: EasemobApp,
        body: dict[str, Any],
        admit: Callable[[bool], None],
        before_call: Callable[[float], None],
        notes: list[str],
    ) -> Any:
        """One send call (and its resend after a 401): the answer's JSON body.

        Token first, then the rate slot (``admit``, told whether this is the first try),
        then the call: a slow token fetch must not bunch admitted calls into a burst the
        provider would throttle (F11 in docs/reliability.md)."""
        payload = encode_body(body)
        before_call(app.call_seconds)
        token = app.tokens.get()
        admit(True)
        before_call(app.call_seconds)
        response = app.post_message(payload, token)
        if response.status_code == 401:
            # The token expired or was revoked: refresh once (shared) and resend.
            app.tokens.invalidate(token)
            notes.append("token refreshed after 401")
            before_call(app.call_seconds)
            token = app.tokens.get()
            admit(False)  # the resend is a call of its own
            before_call(app.call_seconds)
            response = app.post_message(payload, token)
        if response.status_code != 200:
            error = classify(response.status_code, json_or_none(response), response.headers)
            if response.status_code == 429 or (response.status_code == 403 and error.retryable):
                app.limiter.penalize(error.retry_after or 1.0)
            raise error
        return json_or_none(response)

    def _admit_share(
        self,
        app: EasemobApp,
        target_type: str,
        count: int,
        prepaid: bool,
        before_call: Callable[[float], None],
    ) -> Callable[[bool], None]:
        """The rate admission of a call to ``count`` recipients: each one a message against
        the per-minute quota (reserved, the call waiting for the end of its share), then
        the call's slot (docs/architecture.md, "Fan-out")."""

        def admit(first: bool) -> None:
            paid = first and prepaid
            messages = count - (1 if paid else 0)
            if target_type == "users" and messages > 0:
                try:
                    lag = app.limiter.reserve(
                        {USER_MESSAGES: float(messages)}, max_wait=self.lease_seconds / 2
                    )
                except TimeoutError as exc:
                    raise ProviderError("rate_limited_locally", str(exc), retryable=True) from None
                if lag > 0:
                    before_call(lag + app.call_seconds)
                    time.sleep(lag)
            if not paid:
                app.acquire({CALLS: 1.0})

        return admit

    def _answer_of(
        self, ref: MessageRef, targets: list[str], body: Any, origin: Origin | None
    ) -> CallAnswer:
        """Each target's outcome in a call's answer: its message id, or a refusal when the
        answer gives it something else (docs/providers.md, "Easemob")."""
        ids = _target_ids(body)
        if self.index is not None and origin is not None:
            self._remember_ids(ref, {t: i for t, i in ids.items() if i.isdigit()})
        answer: CallAnswer = {}
        for target in targets:
            value = ids.get(target)
            if value is None:
                continue
            answer[target] = (
                value if value.isdigit() or value == "success" else Refused(_refusal_code(value))
            )
        return answer

    def _remember_ids(self, ref: MessageRef, ids: dict[str, str]) -> None:
        """Index each target's Easemob message id to ``ref`` (one pipelined call)."""
        assert self.index is not None
        pipe = self.index.pipeline(transaction=False)
        for msg_id in ids.values():
            pipe.set(keys.easemob_msgid(msg_id), ref.member, ex=self.index_ttl)
        try:
            pipe.execute()
        except REDIS_ERRORS as exc:  # the message is sent: never retry it for this
            log.warning("getMessageId=%s Easemob ids not indexed for callbacks: %s", ref.id, exc)


def _target_ids(body: Any) -> dict[str, str]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return {}
    return {str(target): str(msg_id) for target, msg_id in data.items() if msg_id is not None}


def _refusal_code(value: str) -> str:
    """A short code for a target Easemob answered with an error text instead of an id."""
    return "refused:" + "".join(c if c.isalnum() else "_" for c in value)[:10]


def _callback_routes(settings: Settings, store: StatusStore) -> APIRouter:
    from dispatcher.channels.easemob.callbacks import callback_routes  # FastAPI: the API's only

    return callback_routes(settings, store)


def _no_checkpoint(longest: float) -> None:
    """A send outside an attempt (tests, tools) has no lease to keep."""


def _provider_message_id(body: Any, target: str) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        value = data.get(target)
        if value is None and data:
            value = next(iter(data.values()))
        return None if value is None else str(value)
    return None


def _configured(settings: Settings) -> bool:
    return bool(app_configs(settings))


CHANNEL = ChannelSpec(
    name=NAME,
    channel_type=1,
    carries=frozenset(int(t) for t in MessageType),
    media=frozenset(int(t) for t in MEDIA_TYPES),
    configured=_configured,
    check_size=lambda settings, message_id, message, client: check_size(
        message_id, message, settings.easemob_max_body_bytes
    ),
    open=EasemobChannel,
    recall=recall_delivered,
    routes=_callback_routes,
    fans_out=True,
    app_for=app_for,
)

__all__ = [
    "CHANNEL",
    "NAME",
    "EasemobApp",
    "EasemobChannel",
    "EasemobConfig",
    "app_configs",
    "app_for",
    "body_size",
    "build_body",
    "build_msg",
    "call_costs",
    "check_size",
    "classify",
    "easemob_config",
    "retry_after_seconds",
    "transport_error",
]
