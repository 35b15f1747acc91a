"""The Easemob channel: message -> classic ``/messages`` body, token cache, send, classify.

Mapping and classification are pure functions (tested without servers); the
:class:`EasemobChannel` adds the I/O: a shared token in Redis, the shared rate
limiter, and one small httpx client per thread (httpcore scans every pooled
connection per request, so many small clients beat one shared big one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import redis

from dispatcher import keys
from dispatcher.channels.base import Receipt
from dispatcher.config import Settings
from dispatcher.errors import (
    ConfigurationError,
    FieldError,
    MediaError,
    MessageTooLarge,
    ProviderError,
)
from dispatcher.models import (
    MEDIA_TYPES,
    CustomNewsInfo,
    ExtensionInfo,
    ImageInfo,
    LocationInfo,
    Message,
    MessageType,
    NewsInfo,
    PassThroughInfo,
    TemplateInfo,
    TextInfo,
    VideoInfo,
    VoiceInfo,
)
from dispatcher.ratelimit import Dimension, Prepay, SharedRateLimiter

log = logging.getLogger(__name__)

NAME = "easemob"
DISPATCHER_EXT_KEY = "dispatcher"
# Room for a signed Qiniu download URL when the size check runs before resolution.
URL_PLACEHOLDER_LENGTH = 256
RATE_SAFETY = 0.97  # aim a little under the provider's limit: our clock is not theirs
SLOT_SLACK = 1.5
"""Limiter burst, in calls: half a slot of tolerance, so a caller that wakes a little late
for its slot does not push every later slot back (without it 100 calls/s ran at ~91/s);
at most one call in any second comes half a slot early."""
TOKEN_MEMO_SECONDS = 5.0
"""How long a worker process reuses the token it last read from Redis without asking again
(never past the Redis copy's own expiry); a 401 drops it at once."""
CONNECT_TIMEOUT = 5.0  # seconds to connect to Easemob, for every call


# ---------------------------------------------------------------------------
# Mapping (pure)


def _require(value: Any, what: str, message_id: str) -> Any:
    if value is None:
        raise MediaError(
            "media_unresolved",
            f"{what} is unknown for message {message_id}: media resolution did not provide it",
            retryable=False,
        )
    return value


def build_msg(message_id: str, message: Message) -> dict[str, Any]:
    """The ``msg`` object for the classic endpoint (SPEC §4 table)."""
    info = message.messageInfo
    if isinstance(info, TextInfo | TemplateInfo):
        return {"type": "txt", "msg": info.textMessage}
    if isinstance(info, ImageInfo):
        return {
            "type": "img",
            "url": _require(info.fileUrl, "image fileUrl", message_id),
            "filename": info.imageMessage,
            "size": {
                "width": _require(info.imageWidth, "imageWidth", message_id),
                "height": _require(info.imageHeight, "imageHeight", message_id),
            },
        }
    if isinstance(info, VoiceInfo):
        return {
            "type": "audio",
            "url": _require(info.fileUrl, "voice fileUrl", message_id),
            "filename": info.voiceMessage,
            "length": _require(info.duration, "voice duration", message_id),
        }
    if isinstance(info, VideoInfo):
        return {
            "type": "video",
            "url": _require(info.fileUrl, "video fileUrl", message_id),
            "filename": info.videoMessage,
            "thumb": _require(info.thumbFileUrl, "video thumbFileUrl", message_id),
            "length": _require(info.duration, "video duration", message_id),
            "file_length": _require(info.fileLength, "video fileLength", message_id),
        }
    if isinstance(info, LocationInfo):
        # Easemob's send examples carry coordinates as strings.
        return {
            "type": "loc",
            "lat": _coordinate(info.latitude),
            "lng": _coordinate(info.longitude),
            "addr": info.address,
        }
    if isinstance(info, PassThroughInfo):
        return {"type": "cmd", "action": info.action}
    if isinstance(info, CustomNewsInfo):
        return {
            "type": "custom",
            "customEvent": "customNews",
            "customExts": info.model_dump(exclude_none=True),
        }
    if isinstance(info, NewsInfo):
        return {
            "type": "custom",
            "customEvent": "news",
            "customExts": info.model_dump(exclude_none=True),
        }
    if isinstance(info, ExtensionInfo):
        expand = (message.ext or {})["expandMsg"]
        return {
            "type": "custom",
            "customEvent": expand["MsgType"],
            "customExts": {"content": expand["Content"]},
        }
    raise TypeError(f"no Easemob mapping for {type(info).__name__}")


def _coordinate(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(value)


def build_body(message_id: str, message: Message) -> dict[str, Any]:
    """The full classic ``POST /{org}/{app}/messages`` body."""
    ext = dict(message.ext or {})
    ext[DISPATCHER_EXT_KEY] = {"getMessageId": message_id}
    return {
        "target_type": message.target_type,
        "target": [message.to],
        "msg": build_msg(message_id, message),
        "from": message.sender,
        "ext": ext,
    }


def encode_body(body: dict[str, Any]) -> bytes:
    """UTF-8 JSON, not ASCII-escaped: valid Unicode reaches the provider byte for byte."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _with_placeholders(message: Message) -> Message:
    """The message with every unresolved media URL/figure replaced by a worst-case stand-in."""
    info = message.messageInfo
    if not isinstance(info, ImageInfo | VoiceInfo | VideoInfo):
        return message
    fill: dict[str, Any] = {}
    url = "u" * URL_PLACEHOLDER_LENGTH
    for name in ("fileUrl", "thumbFileUrl"):
        if name in type(info).model_fields and getattr(info, name) is None:
            fill[name] = url
    for name in ("fileLength", "duration", "imageWidth", "imageHeight"):
        if name in type(info).model_fields and getattr(info, name) is None:
            fill[name] = 99_999_999
    return message.model_copy(update={"messageInfo": info.model_copy(update=fill)})


def body_size(message_id: str, message: Message) -> int:
    """Bytes of the body Easemob would receive, with unresolved media at its worst case."""
    return len(encode_body(build_body(message_id, _with_placeholders(message))))


def check_size(message_id: str, message: Message, limit: int) -> None:
    if message.ext is not None and (ext_size := len(encode_body(message.ext))) > limit:
        raise MessageTooLarge(
            [FieldError("ext", f"is {ext_size} bytes serialized, over the limit of {limit} bytes")]
        )
    size = body_size(message_id, message)
    if size > limit:
        raise MessageTooLarge(
            [
                FieldError(
                    "body",
                    f"the Easemob message body would be {size} bytes, over the provider's "
                    f"limit of {limit} bytes (msg + ext)",
                )
            ]
        )


# ---------------------------------------------------------------------------
# Classification (pure)


def retry_after_seconds(value: str | None) -> float | None:
    """Parse Retry-After: delta seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def classify(status: int, body: Any, headers: httpx.Headers | dict[str, str]) -> ProviderError:
    """The DeliveryError for a non-200 reply (SPEC §8: what is retried)."""
    code = f"http_{status}"
    description = ""
    if isinstance(body, dict):
        code = str(body.get("error") or code)
        description = str(body.get("error_description") or "")
    message = f"Easemob answered {status} {code}" + (f": {description}" if description else "")
    retry_after = retry_after_seconds(headers.get("retry-after"))
    if status == 429:
        return ProviderError(code, message, retryable=True, retry_after=retry_after, status=status)
    if status == 403 and _is_quota(code, description):
        return ProviderError(code, message, retryable=True, retry_after=retry_after, status=status)
    if status >= 500 or status == 408:
        return ProviderError(code, message, retryable=True, retry_after=retry_after, status=status)
    return ProviderError(code, message, retryable=False, status=status)


def _is_quota(code: str, description: str) -> bool:
    text = f"{code} {description}".lower()
    return any(word in text for word in ("limit", "quota", "forbidden for url", "exceed"))


def transport_error(exc: httpx.HTTPError) -> ProviderError:
    """A failed exchange: retryable; ambiguous when the request may have reached Easemob."""
    sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    kind = type(exc).__name__
    if sent:
        return ProviderError(
            "response_lost",
            f"no answer from Easemob after the request was sent ({kind}); "
            "the provider may have delivered it",
            retryable=True,
            ambiguous=True,
        )
    return ProviderError("connect_failed", f"could not reach Easemob ({kind})", retryable=True)


# ---------------------------------------------------------------------------
# Token cache (shared by all workers through Redis)

_DELETE_IF_EQUAL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class TokenCache:
    """One app token for every worker: fetched by one, read by all, dropped on a 401."""

    def __init__(self, settings: Settings, client: redis.Redis, fetch: Any) -> None:
        org, app, client_id = _credentials(settings)[:3]
        self.redis = client
        self.key = keys.easemob_token(org, app, client_id)
        self.lock_key = keys.easemob_token_lock(org, app, client_id)
        self._fetch = fetch
        self._delete_if_equal = client.register_script(_DELETE_IF_EQUAL)
        self._memo: tuple[str, float] | None = None  # (token, monotonic time to re-read Redis)
        self._revoked: str | None = None
        # The lock outlives one fetch (connect + read timeouts) and no more: a worker
        # killed mid-fetch holds every other worker back only that long.
        self.lock_seconds = settings.easemob_timeout + CONNECT_TIMEOUT + 1

    def get(self) -> str:
        # Redis stays the source of truth; this process only saves the round trip
        # for a few seconds (one GET per delivery was a quarter of its Redis calls).
        memo = self._memo
        if memo is not None and time.monotonic() < memo[1]:
            return memo[0]
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key)
        pipe.pttl(self.key)
        cached, pttl = pipe.execute()
        if cached is not None:
            token = cached.decode() if isinstance(cached, bytes) else str(cached)
            self._remember(token, pttl)
            return token
        return self._refresh()

    def is_warm(self) -> bool:
        """True when :meth:`get` answers from this process's memory, without waiting."""
        memo = self._memo
        return memo is not None and time.monotonic() < memo[1]

    def invalidate(self, token: str) -> None:
        """Drop ``token`` unless another worker already replaced it."""
        self._revoked = token  # a thread that read it just before must not memo it again
        memo = self._memo
        if memo is not None and memo[0] == token:
            self._memo = None
        self._delete_if_equal(keys=[self.key], args=[token])

    def _remember(self, token: str, pttl_ms: int | None) -> None:
        if token == self._revoked:
            return
        lifetime = TOKEN_MEMO_SECONDS
        if pttl_ms is not None and pttl_ms >= 0:
            lifetime = min(lifetime, pttl_ms / 1000)
        self._memo = (token, time.monotonic() + lifetime)

    def _refresh(self) -> str:
        lock = uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_seconds + 2
        while time.monotonic() < deadline:
            if self.redis.set(self.lock_key, lock, nx=True, px=int(self.lock_seconds * 1000)):
                try:
                    cached = self.redis.get(self.key)
                    if cached is not None:
                        return cached.decode() if isinstance(cached, bytes) else str(cached)
                    token, expires_in = self._fetch()
                    self.redis.set(self.key, token, ex=_cache_seconds(expires_in))
                    log.info("easemob token fetched (expires_in=%s)", expires_in)
                    self._remember(str(token), _cache_seconds(expires_in) * 1000)
                    return str(token)
                finally:
                    self._delete_if_equal(keys=[self.lock_key], args=[lock])
            time.sleep(0.05)  # another worker is fetching: wait for its token
            cached = self.redis.get(self.key)
            if cached is not None:
                return cached.decode() if isinstance(cached, bytes) else str(cached)
        raise ProviderError(
            "token_unavailable", "timed out waiting for the Easemob token refresh", retryable=True
        )


def _cache_seconds(expires_in: int) -> int:
    """Refresh well before expiry; ``0`` means a token that never expires."""
    if expires_in <= 0:
        return 86400
    return max(1, min(expires_in - 60, int(expires_in * 0.9)))


def _credentials(settings: Settings) -> tuple[str, str, str, str]:
    missing = [
        f"DISPATCHER_EASEMOB_{name.upper()}"
        for name in ("org", "app", "client_id", "client_secret")
        if getattr(settings, f"easemob_{name}") is None
    ]
    if missing:
        raise ConfigurationError(f"Easemob is not configured: set {', '.join(missing)}")
    assert settings.easemob_client_secret is not None
    return (
        settings.easemob_org or "",
        settings.easemob_app or "",
        settings.easemob_client_id or "",
        settings.easemob_client_secret.get_secret_value(),
    )


def call_costs(target_type: str) -> dict[str, float]:
    """What one send costs on each rate dimension: one call, and one user message when it
    goes to a user (a message has one target, :func:`build_body`)."""
    if target_type == "users":
        return {"easemob:calls": 1.0, "easemob:user-messages": 1.0}
    return {"easemob:calls": 1.0}


# ---------------------------------------------------------------------------
# The channel


class EasemobChannel:
    """Sends messages to Easemob's classic ``/messages?useMsgId=true`` endpoint."""

    name = NAME

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.org, self.app, self.client_id, self._client_secret = _credentials(settings)
        self.base = f"{settings.easemob_base_url}/{self.org}/{self.app}"
        self.tokens = TokenCache(settings, client, self._fetch_token)
        self.limiter = SharedRateLimiter(
            client,
            [
                Dimension(
                    "easemob:calls",
                    settings.easemob_calls_per_second * RATE_SAFETY,
                    1.0,
                    burst=SLOT_SLACK,
                ),
                Dimension(
                    "easemob:user-messages",
                    settings.easemob_messages_per_minute * RATE_SAFETY,
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
            types=frozenset(int(t) for t in MessageType if t not in MEDIA_TYPES),
        )
        self._local = threading.local()
        self._clients: list[httpx.Client | httpx.HTTPTransport] = []
        self._clients_lock = threading.Lock()
        self._timeout = httpx.Timeout(settings.easemob_timeout, connect=CONNECT_TIMEOUT)
        self._headers = {"Accept": "application/json", "User-Agent": "dispatcher"}
        self._messages_url = httpx.URL(f"{self.base}/messages?useMsgId=true")
        # One TLS context for every per-thread client: building one loads the CA
        # bundle (tens of ms of CPU), which 32 threads paid 32 times over.
        self._tls = httpx.create_ssl_context()

    @property
    def http(self) -> httpx.Client:
        """This thread's client (token fetches), on this thread's connections."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                timeout=self._timeout,
                headers=self._headers,
                transport=self.transport,
            )
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    @property
    def transport(self) -> httpx.HTTPTransport:
        """This thread's small connection pool."""
        transport: httpx.HTTPTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = httpx.HTTPTransport(
                verify=self._tls,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            )
            self._local.transport = transport
            with self._clients_lock:
                self._clients.append(transport)
        return transport

    def close(self) -> None:
        with self._clients_lock:
            for client in self._clients:
                client.close()
            self._clients.clear()

    def check_size(self, message_id: str, message: Message) -> None:
        check_size(message_id, message, self.settings.easemob_max_body_bytes)

    def rate_prepay(self) -> Prepay | None:
        """What the lease script may charge before the send (see :class:`Prepay`).

        None until this process holds a token: a send that must first fetch one would
        arrive late and bunch with the calls admitted after it (F11).
        """
        if not self.tokens.is_warm():
            return None
        return self._prepay

    def send(self, message_id: str, message: Message, *, prepaid: bool = False) -> Receipt:
        body = build_body(message_id, message)
        payload = encode_body(body)
        if len(payload) > self.settings.easemob_max_body_bytes:
            raise ProviderError(
                "message_too_large",
                f"Easemob body is {len(payload)} bytes, over the limit of "
                f"{self.settings.easemob_max_body_bytes}",
                retryable=False,
            )
        costs = call_costs(message.target_type)

        # Token first, then the rate slot, then the call: a slow token fetch must not
        # bunch admitted calls into a burst the provider would throttle (F11). A slot the
        # lease script took (only while the token is in memory) is the same slot, earlier.
        notes: list[str] = []
        token = self.tokens.get()
        if not prepaid:
            self._acquire(costs)
        response = self._post_message(payload, token)
        if response.status_code == 401:
            # The token expired or was revoked: refresh once (shared) and resend.
            self.tokens.invalidate(token)
            notes.append("token refreshed after 401")
            token = self.tokens.get()
            self._acquire(costs)  # the resend is a call of its own
            response = self._post_message(payload, token)
        if response.status_code != 200:
            error = classify(response.status_code, _json(response), response.headers)
            if response.status_code == 429 or (response.status_code == 403 and error.retryable):
                self.limiter.penalize(error.retry_after or 1.0)
            raise error
        return Receipt(_provider_message_id(_json(response), message.to), notes)

    def _acquire(self, costs: dict[str, float]) -> None:
        try:
            self.limiter.acquire(costs, max_wait=self.settings.lease_seconds / 2)
        except TimeoutError as exc:
            raise ProviderError("rate_limited_locally", str(exc), retryable=True) from None

    def _post_message(self, payload: bytes, token: str) -> httpx.Response:
        # Straight to this thread's transport with a URL parsed once: httpx.Client's
        # per-request layers (URL merging, auth, redirects, cookies) cost as much CPU as
        # the HTTP exchange itself. Errors are still httpx's (the transport maps them).
        request = httpx.Request(
            "POST",
            self._messages_url,
            content=payload,
            headers={
                **self._headers,
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
            },
            extensions={"timeout": self._timeout.as_dict()},
        )
        try:
            response = self.transport.handle_request(request)
            response.request = request
            try:
                response.read()
            finally:
                response.close()
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        return response

    def _fetch_token(self) -> tuple[str, int]:
        try:
            response = self.http.post(
                f"{self.base}/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": self.client_id,
                    "client_secret": self._client_secret,
                },
            )
        except httpx.HTTPError as exc:
            raise ProviderError(
                "token_unreachable",
                f"could not fetch the Easemob token ({type(exc).__name__})",
                retryable=True,
            ) from None
        body = _json(response)
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


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _provider_message_id(body: Any, target: str) -> str | None:
    data = body.get("data") if isinstance(body, dict) else None
    if isinstance(data, dict):
        value = data.get(target)
        if value is None and data:
            value = next(iter(data.values()))
        return None if value is None else str(value)
    return None
