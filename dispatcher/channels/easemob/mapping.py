"""Easemob, pure: message -> classic ``/messages`` body, size check, answer -> DeliveryError.

No I/O here, so the mapping and the retry decisions are tested without servers.
The mapping table is in docs/extending.md, "The Easemob channel".
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from dispatcher import message_info as kinds
from dispatcher.channels.http import encode_body
from dispatcher.errors import FieldError, MediaError, MessageTooLarge, ProviderError
from dispatcher.models import Message

DISPATCHER_EXT_KEY = "dispatcher"
# Room for a signed Qiniu download URL when the size check runs before resolution.
URL_PLACEHOLDER_LENGTH = 256


def _require(value: Any, what: str, message_id: str) -> Any:
    if value is None:
        raise MediaError(
            "media_unresolved",
            f"{what} is unknown for message {message_id}: media resolution did not provide it",
            retryable=False,
        )
    return value


def build_msg(message_id: str, message: Message) -> dict[str, Any]:
    """The ``msg`` object for the classic endpoint (docs/extending.md, "The Easemob channel")."""

    def resolved(value: Any, what: str) -> Any:
        return _require(value, what, message_id)

    match message.messageInfo:
        case kinds.TextInfo() | kinds.TemplateInfo() as text:
            return {"type": "txt", "msg": text.textMessage}
        case kinds.ImageInfo() as image:
            width = resolved(image.imageWidth, "imageWidth")
            height = resolved(image.imageHeight, "imageHeight")
            url = resolved(image.fileUrl, "image fileUrl")
            return {
                "type": "img",
                "url": url,
                "filename": image.imageMessage,
                "size": {"width": width, "height": height},
            }
        case kinds.VoiceInfo() as voice:
            url, length = resolved(voice.fileUrl, "voice fileUrl"), voice.duration
            return {
                "type": "audio",
                "url": url,
                "filename": voice.voiceMessage,
                "length": resolved(length, "voice duration"),
            }
        case kinds.VideoInfo() as video:
            return {
                "type": "video",
                "url": resolved(video.fileUrl, "video fileUrl"),
                "filename": video.videoMessage,
                "thumb": resolved(video.thumbFileUrl, "video thumbFileUrl"),
                "length": resolved(video.duration, "video duration"),
                "file_length": resolved(video.fileLength, "video fileLength"),
            }
        case kinds.LocationInfo() as place:
            # Easemob's send examples carry coordinates as strings.
            lat, lng = _coordinate(place.latitude), _coordinate(place.longitude)
            return {"type": "loc", "lat": lat, "lng": lng, "addr": place.address}
        case kinds.PassThroughInfo() as command:
            return {"type": "cmd", "action": command.action}
        case kinds.CustomNewsInfo() | kinds.NewsInfo() as news:
            event = "customNews" if isinstance(news, kinds.CustomNewsInfo) else "news"
            return _custom(event, news.model_dump(exclude_none=True))
        case kinds.ExtensionInfo():
            expand = message.ext.expandMsg if message.ext else None
            if expand is None:  # parse_message requires it for this type
                raise TypeError("an extension message without ext.expandMsg")
            return _custom(expand.MsgType, {"content": expand.Content})
    raise TypeError(f"no Easemob mapping for {type(message.messageInfo).__name__}")


def _custom(event: str, exts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "custom", "customEvent": event, "customExts": exts}


def _coordinate(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(value)


def build_body(message_id: str, message: Message) -> dict[str, Any]:
    """The full classic ``POST /{org}/{app}/messages`` body."""
    ext = message.ext.model_dump(exclude_unset=True) if message.ext else {}
    ext[DISPATCHER_EXT_KEY] = {"getMessageId": message_id}
    return {
        "target_type": message.target_type,
        "target": message.recipients,
        "msg": build_msg(message_id, message),
        "from": message.sender,
        "ext": ext,
    }


def _with_placeholders(message: Message) -> Message:
    """The message with every unresolved media URL/figure replaced by a worst-case stand-in."""
    info = message.messageInfo
    if not isinstance(info, kinds.ImageInfo | kinds.VoiceInfo | kinds.VideoInfo):
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
    """Bytes of the body Easemob would receive, with unresolved media at its worst case,
    for one target (Easemob's limit is on msg + ext; a list's calls carry more targets)."""
    body = build_body(message_id, _with_placeholders(message))
    return len(encode_body({**body, "target": body["target"][:1]}))


def check_size(message_id: str, message: Message, limit: int) -> None:
    ext = message.ext.model_dump(exclude_unset=True) if message.ext else None
    if ext is not None and (ext_size := len(encode_body(ext))) > limit:
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


# Classification


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


def classify(status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """The DeliveryError for a non-200 reply (docs/reliability.md, "What is retried")."""
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


CALLS = "easemob:calls"
USER_MESSAGES = "easemob:user-messages"
"""The shared limiter's dimensions: calls per second, messages to users per minute."""


def call_costs(target_type: str) -> dict[str, float]:
    """What a send to one recipient costs on each rate dimension: one call, and one user
    message when it goes to a user (a call to many: dispatcher/fanout.py)."""
    if target_type == "users":
        return {CALLS: 1.0, USER_MESSAGES: 1.0}
    return {CALLS: 1.0}
