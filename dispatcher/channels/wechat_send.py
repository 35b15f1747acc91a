"""One WeChat Official Account app's sends: customer-service and template messages.

The pure parts live beside it: :mod:`~dispatcher.channels.wechat_mapping` (our
messages as WeChat bodies), :mod:`~dispatcher.channels.wechat_outcome` (what an
``errcode`` means), :mod:`~dispatcher.channels.wechat_media` (media ids shared
through Redis) and :mod:`~dispatcher.channels.wechat_quota` (daily quotas).
:class:`WeChatSender` does the I/O for one app: one send is at most one token
refresh, one re-upload of expired media and one window fallback. The channel
(:mod:`dispatcher.channels.wechat`) holds one sender per app. ``docs/channels.md``
has the design and every decision behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from dispatcher import keys
from dispatcher.channels.base import Origin, Receipt
from dispatcher.channels.http import encode_body
from dispatcher.channels.tokens import TokenCache
from dispatcher.channels.wechat_config import WeChatConfig
from dispatcher.channels.wechat_mapping import (
    NAME,
    MediaNeed,
    check_message,
    custom_body,
    fallback_body,
    media_needs,
    template_body,
)
from dispatcher.channels.wechat_media import MediaIdCache
from dispatcher.channels.wechat_outcome import (
    TOKEN_ERRORS,
    WINDOW_ERRORS,
    Action,
    bad_answer,
    classify,
    error_for,
    seconds_to_next_minute,
    transport_error,
)
from dispatcher.channels.wechat_quota import QuotaBook
from dispatcher.errors import MediaError, ProviderError
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from dispatcher.models import Message, MessageType
from dispatcher.ratelimit import Dimension, Prepay, SharedRateLimiter

log = logging.getLogger(__name__)

CUSTOM_SEND = "custom_send"
TEMPLATE_SEND = "template_send"
MEDIA_UPLOAD = "media_upload"
PATHS = {
    CUSTOM_SEND: "/cgi-bin/message/custom/send",
    TEMPLATE_SEND: "/cgi-bin/message/template/send",
    MEDIA_UPLOAD: "/cgi-bin/media/upload",
}
CONNECT_TIMEOUT = 5.0
MAX_RATE_WAIT = 20.0  # seconds a call may wait for its rate slot before the attempt is retried
SLOT_SLACK = 1.5  # limiter burst in calls, as for Easemob (dispatcher.channels.easemob)
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
RECEIPT_INDEX_SECONDS = 7 * 86400  # how long a template msgid finds its message


@dataclass
class Answer:
    """WeChat's JSON answer to one call (``errcode`` 0 when absent, as for uploads)."""

    errcode: int
    body: dict[str, Any]

    @property
    def errmsg(self) -> str:
        return str(self.body.get("errmsg", ""))


def token_cache_seconds(expires_in: int) -> int:
    """How long to keep a token: until 6 minutes before expiry (WeChat renews stable tokens
    in their last 5), and never less than a minute nor more than half a short lifetime."""
    return max(expires_in - 360, min(60, expires_in // 2), 1)


@dataclass
class _Send:
    """One message's way through the channel, and what happened on it."""

    ref: MessageRef
    message: Message
    origin: Origin | None = None
    notes: list[str] = field(default_factory=list)
    media_ids: dict[str, str] = field(default_factory=dict)

    def before_call(self, longest: float) -> None:
        if self.origin is not None:
            self.origin.before_call(longest)


class WeChatSender:
    """Sends messages to one WeChat Official Account app."""

    name = NAME

    def __init__(
        self,
        config: WeChatConfig,
        client: redis.Redis,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.appid = appid = config.appid
        self.redis = client
        self._clock = clock
        # A lock outlives one call (connect + read) and no more.
        lock_seconds = config.timeout + CONNECT_TIMEOUT + 1
        self.call_seconds = config.timeout + CONNECT_TIMEOUT
        """The longest one API call may take (its lease must cover that)."""
        # Token and limiter are the app's own: two apps (or Easemob) never share them.
        self.tokens = TokenCache(
            client,
            channel=NAME,
            account=(appid,),
            fetch=self._fetch_token,
            lock_seconds=lock_seconds,
            keep_for=token_cache_seconds,
        )
        # An upload is a download from Qiniu plus an upload to WeChat.
        self.media = MediaIdCache(client, appid, lock_seconds=2 * lock_seconds, clock=clock)
        self.quotas = QuotaBook(
            client,
            appid,
            quotas=config.daily_quotas,
            resume_time=config.quota_resume_time,
            zone=config.timezone,
            clock=clock,
        )
        # Its own budget: WeChat and Easemob never throttle each other.
        self.limiter = SharedRateLimiter(
            client,
            [Dimension(keys.wechat_rate(appid), config.calls_per_second, 1.0, burst=SLOT_SLACK)],
        )
        self._http = httpx.Client(
            timeout=httpx.Timeout(config.timeout, connect=CONNECT_TIMEOUT),
            headers={"User-Agent": "dispatcher"},
        )

    # -- the Channel protocol ----------------------------------------------------

    def check_size(self, message_id: str, message: Message) -> None:
        """Refuse at submit what WeChat would refuse: types, sizes, formats, unmapped templates."""
        check_message(message, self.config.templates)

    def rate_prepay(self) -> Prepay | None:
        return None  # the lease script's slot is Easemob's; WeChat takes its own per call

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        message_id: str,
        message: Message,
        *,
        prepaid: bool = False,
        origin: Origin | None = None,
    ) -> Receipt:
        ref = origin.ref if origin is not None else MessageRef(DEFAULT_NAMESPACE, message_id)
        state = _Send(ref, message, origin)
        if message.messageType is MessageType.TEMPLATE:
            body = template_body(state.ref.id, message, self.config.templates)
            return self._template_receipt(state, self._call(state, TEMPLATE_SEND, body))
        needs = media_needs(message)
        self._upload_all(state, needs)
        answer = self._call(state, CUSTOM_SEND, custom_body(message, state.media_ids))
        if classify(answer.errcode) is Action.REUPLOAD_MEDIA and needs:
            for need in needs:
                self.media.drop(need, state.media_ids[need.role])
            self._upload_all(state, needs)
            state.notes.append("media uploaded again after errcode 40007")
            answer = self._call(state, CUSTOM_SEND, custom_body(message, state.media_ids))
        fallback = self.config.window_fallback
        if answer.errcode in WINDOW_ERRORS and fallback is not None:
            state.notes.append(
                f"customer-service message refused with errcode {answer.errcode} "
                f"(48-hour window); sent as template {fallback.template_id} instead"
            )
            body = fallback_body(state.ref.id, message, fallback)
            return self._template_receipt(state, self._call(state, TEMPLATE_SEND, body))
        if answer.errcode != 0:
            raise self._error(answer, CUSTOM_SEND)
        return Receipt(None, state.notes)

    # -- steps -------------------------------------------------------------------

    def _template_receipt(self, state: _Send, answer: Answer) -> Receipt:
        if answer.errcode != 0:
            raise self._error(answer, TEMPLATE_SEND)
        msgid = answer.body.get("msgid")
        if msgid is None:
            return Receipt(None, state.notes)
        try:
            self.redis.set(
                keys.wechat_template_msgid(self.appid, str(msgid)),
                state.ref.member,
                ex=RECEIPT_INDEX_SECONDS,
            )
        except redis.RedisError as exc:
            # WeChat has the message: failing the attempt now would send it twice.
            log.warning(
                "getMessageId=%s template msgid %s not indexed for receipts: %s",
                state.ref.id,
                msgid,
                exc,
            )
        return Receipt(str(msgid), state.notes)

    def _upload_all(self, state: _Send, needs: list[MediaNeed]) -> None:
        for need in needs:
            uploads: list[str] = []

            def upload(need: MediaNeed = need, uploads: list[str] = uploads) -> tuple[str, float]:
                uploads.append(need.key)
                return self._upload(state, need)

            state.media_ids[need.role] = self.media.get_or_upload(need, upload)
            if uploads:
                state.notes.append(f"{need.limit.media_type} {need.key!r} uploaded to WeChat")

    def _upload(self, state: _Send, need: MediaNeed) -> tuple[str, float]:
        data = self._download(need)
        files = {"media": (need.upload_name, data)}
        answer = self._call(
            state, MEDIA_UPLOAD, files=files, params={"type": need.limit.media_type}
        )
        media_id = answer.body.get("media_id")
        if answer.errcode != 0 or not isinstance(media_id, str):
            raise self._error(answer, MEDIA_UPLOAD) if answer.errcode else bad_answer(200, "upload")
        created_at = answer.body.get("created_at")
        return media_id, float(created_at) if isinstance(created_at, int | float) else self._clock()

    def _download(self, need: MediaNeed) -> bytes:
        """The Qiniu object's bytes, refused past WeChat's limit without reading it all."""
        limit = need.limit
        what = f"{limit.media_type} {need.key!r}"
        if need.url is None:
            raise MediaError(
                "media_unresolved", f"{what} has no download URL (not resolved)", retryable=False
            )
        if need.size is not None and need.size > limit.max_bytes:
            raise _too_large(what, need.size, limit.described)
        chunks: list[bytes] = []
        size = 0
        try:
            with self._http.stream("GET", need.url) as response:
                if response.status_code != 200:
                    raise MediaError(
                        "media_not_found" if response.status_code == 404 else "qiniu_unavailable",
                        f"download of {what} from Qiniu answered HTTP {response.status_code}",
                        retryable=response.status_code != 404,
                        status=response.status_code,
                    )
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > limit.max_bytes:
                        raise _too_large(what, size, limit.described)
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            # The exception text may carry the signed URL: its type is enough.
            raise MediaError(
                "qiniu_unavailable",
                f"download of {what} from Qiniu failed ({type(exc).__name__})",
                retryable=True,
            ) from None
        return b"".join(chunks)

    def _call(
        self,
        state: _Send,
        operation: str,
        body: dict[str, Any] | None = None,
        *,
        files: dict[str, tuple[str, bytes]] | None = None,
        params: dict[str, str] | None = None,
    ) -> Answer:
        """One API call with the shared token; on a token error, one refresh and one resend."""
        self.quotas.check(operation)
        payload = encode_body(body) if body is not None else None
        # Before each provider call (a token fetch too) the attempt keeps its lease or stops.
        state.before_call(self.call_seconds)
        token = self.tokens.get()
        state.before_call(self.call_seconds)
        answer = self._post(operation, token, payload, files, params)
        if answer.errcode in TOKEN_ERRORS:
            self.tokens.invalidate(token)
            state.notes.append(f"token refreshed after errcode {answer.errcode}")
            state.before_call(self.call_seconds)
            token = self.tokens.get()
            state.before_call(self.call_seconds)
            answer = self._post(operation, token, payload, files, params)
        return answer

    def _post(
        self,
        operation: str,
        token: str,
        payload: bytes | None,
        files: dict[str, tuple[str, bytes]] | None,
        params: dict[str, str] | None,
    ) -> Answer:
        try:
            self.limiter.acquire({keys.wechat_rate(self.appid): 1.0}, max_wait=MAX_RATE_WAIT)
        except TimeoutError as exc:
            raise ProviderError("rate_limited_locally", str(exc), retryable=True) from None
        url = f"{self.config.base_url}{PATHS[operation]}"
        query = {"access_token": token, **(params or {})}
        headers = JSON_HEADERS if payload else None
        try:
            response = self._http.post(
                url, params=query, content=payload, files=files, headers=headers
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, operation) from None
        self.quotas.count(operation)
        return _answer(response, operation)

    def _error(self, answer: Answer, operation: str) -> ProviderError:
        now = self._clock()
        action = classify(answer.errcode)
        resume_at = self.quotas.pause(operation) if action is Action.QUOTA else None
        if action is Action.FREQUENCY:
            self.limiter.penalize(seconds_to_next_minute(now))
        return error_for(answer.errcode, answer.errmsg, operation, now=now, resume_at=resume_at)

    def _fetch_token(self) -> tuple[str, int]:
        """A token from ``stable_token`` in normal mode (never forced: see docs/channels.md)."""
        body = {
            "grant_type": "client_credential",
            "appid": self.config.appid,
            "secret": self.config.secret.get_secret_value(),
            "force_refresh": False,
        }
        try:
            response = self._http.post(
                f"{self.config.base_url}/cgi-bin/stable_token",
                content=encode_body(body),
                headers=JSON_HEADERS,
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, "stable_token") from None
        answer = _answer(response, "stable_token")
        token = answer.body.get("access_token")
        if answer.errcode == 0 and isinstance(token, str) and token:
            return token, int(answer.body.get("expires_in") or 7200)
        if answer.errcode == 0:
            raise bad_answer(response.status_code, "stable_token")
        if classify(answer.errcode) in (Action.QUOTA, Action.FREQUENCY):
            # The token API's own limits: try again after the minute, do not pause sends.
            raise ProviderError(
                f"wechat_{answer.errcode}",
                f"WeChat stable_token answered errcode {answer.errcode}: {answer.errmsg}",
                retryable=True,
                retry_after=seconds_to_next_minute(self._clock()),
            )
        raise error_for(answer.errcode, answer.errmsg, "stable_token", now=self._clock())


def _answer(response: httpx.Response, operation: str) -> Answer:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict):
        raise bad_answer(response.status_code, operation)
    try:
        errcode = int(body.get("errcode", 0))
    except (TypeError, ValueError):
        raise bad_answer(response.status_code, operation) from None
    return Answer(errcode, body)


def _too_large(what: str, size: int, described: str) -> MediaError:
    return MediaError(
        "media_too_large",
        f"{what} is {size} bytes; WeChat takes at most {described}",
        retryable=False,
    )
