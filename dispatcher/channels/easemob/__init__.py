"""The Easemob channel (channelType 1): classic ``/messages`` sends, shared token and limiter.

:mod:`.mapping` is the pure part (body, size check, classification); this
module adds the I/O: the app token shared through Redis, the shared rate
limiter with both of Easemob's dimensions, and one small HTTP pool per thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import redis
from pydantic import BaseModel, SecretStr

from dispatcher import fanout, keys
from dispatcher.channels.base import ChannelSpec, Origin, Receipt, config_block
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
from dispatcher.channels.http import PerThreadHttp, ProviderHttp, Reply, encode_body, json_or_none
from dispatcher.channels.tokens import TokenCache
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS
from dispatcher.errors import ConfigurationError, ProviderError
from dispatcher.fanout import CallAnswer, Refused
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from dispatcher.models import MEDIA_TYPES, Message, MessageType
from dispatcher.ratelimit import Dimension, Prepay, SharedRateLimiter
from dispatcher.store.policy import StorePolicy
from dispatcher.store.recipients import RecipientStore

if TYPE_CHECKING:
    from fastapi import APIRouter

    from dispatcher.store import StatusStore

log = logging.getLogger(__name__)

NAME = "easemob"
RATE_SAFETY = 0.97  # aim a little under the provider's limit: our clock is not theirs
SLOT_SLACK = 1.5
"""Limiter burst, in calls: half a slot of tolerance, so a caller that wakes a little late
for its slot does not push every later slot back (without it 100 calls/s ran at ~91/s);
at most one call in any second comes half a slot early."""
CONNECT_TIMEOUT = 5.0  # seconds to connect to Easemob, for every call


class EasemobConfig(BaseModel):
    """The ``DISPATCHER_EASEMOB_*`` settings block."""

    base_url: str
    org: str
    app: str
    client_id: str
    client_secret: SecretStr
    timeout: float
    max_body_bytes: int
    calls_per_second: int
    messages_per_minute: int
    recall_window: int


def easemob_config(settings: Settings) -> EasemobConfig:
    return config_block(settings, NAME, EasemobConfig)


class EasemobChannel:
    """Sends messages to Easemob's classic ``/messages?useMsgId=true`` endpoint."""

    name = NAME

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.config = config = easemob_config(settings)
        # Easemob's callbacks find their message through the ids a send got back.
        self.index = client if settings.easemob_callback_secret is not None else None
        self.index_ttl = settings.status_ttl
        self.lease_seconds = settings.lease_seconds
        self.base = f"{config.base_url}/{config.org}/{config.app}"
        self.tokens = TokenCache(
            client,
            channel=NAME,
            account=(config.org, config.app, config.client_id),
            fetch=self._fetch_token,
            lock_seconds=config.timeout + CONNECT_TIMEOUT + 1,
        )
        self.limiter = SharedRateLimiter(
            client,
            [
                Dimension(CALLS, config.calls_per_second * RATE_SAFETY, 1.0, burst=SLOT_SLACK),
                Dimension(
                    USER_MESSAGES,
                    config.messages_per_minute * RATE_SAFETY,
                    60.0,
                    burst=SLOT_SLACK,
                ),
            ],
        )
        # Costs depend on the target type only, so the lease may charge them before the send.
        self._prepay = self.limiter.prepay(
            NAME,
            user_costs=call_costs("users"),
            other_costs=call_costs("chatgroups"),
            types=CHANNEL.carries - CHANNEL.media,
        )
        self.recipients = RecipientStore(client, StorePolicy.from_settings(settings))
        timeout = httpx.Timeout(config.timeout, connect=CONNECT_TIMEOUT)
        common = {"Accept": "application/json", "User-Agent": "dispatcher"}
        self.http = ProviderHttp(timeout, common)
        self.token_http = PerThreadHttp(timeout, common)
        self._messages_url = f"{self.base}/messages?useMsgId=true"
        self.call_seconds = config.timeout + CONNECT_TIMEOUT
        """The longest one provider call may take (its lease must cover that)."""

    def close(self) -> None:
        self.http.close()
        self.token_http.close()

    def rate_prepay(self) -> Prepay | None:
        """What the lease script may charge before the send (see :class:`Prepay`).

        None until this process holds a token: a send that must first fetch one would
        arrive late and bunch with the calls admitted after it (F11 in docs/reliability.md).
        """
        if not self.tokens.is_warm():
            return None
        return self._prepay

    def send(
        self,
        message_id: str,
        message: Message,
        *,
        prepaid: bool = False,
        origin: Origin | None = None,
    ) -> Receipt:
        body = build_body(message_id, message)
        limit = self.config.max_body_bytes
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
        if message.fans_out:

            def call(targets: list[str], paid: bool) -> CallAnswer:
                admit = self._admit_share(message.target_type, len(targets), paid, before_call)
                answer = self._exchange({**body, "target": targets}, admit, before_call, notes)
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
                self._acquire(costs)

        answer = self._exchange(body, admit, before_call, notes)
        if self.index is not None and origin is not None:
            self._remember_ids(origin.ref, _target_ids(answer))
        return Receipt(_provider_message_id(answer, message.recipients[0]), notes)

    def _exchange(
        self,
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
        before_call(self.call_seconds)
        token = self.tokens.get()
        admit(True)
        before_call(self.call_seconds)
        response = self._post_message(payload, token)
        if response.status_code == 401:
            # The token expired or was revoked: refresh once (shared) and resend.
            self.tokens.invalidate(token)
            notes.append("token refreshed after 401")
            before_call(self.call_seconds)
            token = self.tokens.get()
            admit(False)  # the resend is a call of its own
            before_call(self.call_seconds)
            response = self._post_message(payload, token)
        if response.status_code != 200:
            error = classify(response.status_code, json_or_none(response), response.headers)
            if response.status_code == 429 or (response.status_code == 403 and error.retryable):
                self.limiter.penalize(error.retry_after or 1.0)
            raise error
        return json_or_none(response)

    def _admit_share(
        self, target_type: str, count: int, prepaid: bool, before_call: Callable[[float], None]
    ) -> Callable[[bool], None]:
        """The rate admission of a call to ``count`` recipients: each one a message against
        the per-minute quota (reserved, the call waiting for the end of its share), then
        the call's slot (docs/architecture.md, "Fan-out")."""

        def admit(first: bool) -> None:
            paid = first and prepaid
            messages = count - (1 if paid else 0)
            if target_type == "users" and messages > 0:
                try:
                    lag = self.limiter.reserve(
                        {USER_MESSAGES: float(messages)}, max_wait=self.lease_seconds / 2
                    )
                except TimeoutError as exc:
                    raise ProviderError("rate_limited_locally", str(exc), retryable=True) from None
                if lag > 0:
                    before_call(lag + self.call_seconds)
                    time.sleep(lag)
            if not paid:
                self._acquire({CALLS: 1.0})

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

    def _acquire(self, costs: dict[str, float]) -> None:
        try:
            self.limiter.acquire(costs, max_wait=self.lease_seconds / 2)
        except TimeoutError as exc:
            raise ProviderError("rate_limited_locally", str(exc), retryable=True) from None

    def _post_message(self, payload: bytes, token: str) -> Reply:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        try:
            return self.http.post(self._messages_url, payload, headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None

    def _fetch_token(self) -> tuple[str, int]:
        try:
            response = self.token_http.client.post(
                f"{self.base}/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret.get_secret_value(),
                },
            )
        except httpx.HTTPError as exc:
            raise ProviderError(
                "token_unreachable",
                f"could not fetch the Easemob token ({type(exc).__name__})",
                retryable=True,
            ) from None
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = classify(response.status_code, body, response.headers)
            raise ProviderError(
                "token_refused",
                f"Easemob refused the app token request: {error.message}",
                retryable=error.retryable,
                retry_after=error.retry_after,
                status=response.status_code,
            )
        return str(body["access_token"]), int(body.get("expires_in") or 0)


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
    try:
        easemob_config(settings)
    except ConfigurationError:
        return False
    return True


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
)

__all__ = [
    "CHANNEL",
    "NAME",
    "EasemobChannel",
    "EasemobConfig",
    "body_size",
    "build_body",
    "build_msg",
    "call_costs",
    "check_size",
    "classify",
    "retry_after_seconds",
    "transport_error",
]
