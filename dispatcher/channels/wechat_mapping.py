"""Our messages as WeChat request bodies: pure functions, no I/O.

The type mapping table, the limits and what is refused are in ``docs/channels.md``
(WeChat section). Media messages become customer-service messages that point at
temporary media: :func:`media_needs` says what must be uploaded, the channel
uploads it and hands the ``media_id`` values to :func:`custom_body`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from dispatcher.channels.wechat_config import SUMMARY_PLACEHOLDER, WindowFallback
from dispatcher.errors import FieldError, InvalidMessage, MediaError, MessageTooLarge
from dispatcher.models import (
    ImageInfo,
    Message,
    MessageType,
    NewsInfo,
    Template,
    TemplateInfo,
    TextInfo,
    VideoInfo,
    VoiceInfo,
)

NAME = "wechat"
SUPPORTED_TYPES = frozenset(
    {
        MessageType.TEXT,
        MessageType.IMAGE,
        MessageType.VOICE,
        MessageType.VIDEO,
        MessageType.NEWS,
        MessageType.CUSTOM_NEWS,
        MessageType.TEMPLATE,
    }
)
TEXT_MAX_BYTES = 2048
SUMMARY_MAX_CHARS = 200
MiB = 1024 * 1024


@dataclass(frozen=True)
class MediaLimit:
    """What WeChat accepts as temporary media of one type (stricter than Easemob)."""

    media_type: str
    extensions: tuple[str, ...]
    max_bytes: int
    described: str


IMAGE = MediaLimit("image", ("jpg", "jpeg", "png"), 2 * MiB, "2 MiB")
VOICE = MediaLimit("voice", ("amr", "mp3"), 2 * MiB, "2 MiB")
VIDEO = MediaLimit("video", ("mp4",), 10 * MiB, "10 MiB")
THUMB = MediaLimit("thumb", ("jpg", "jpeg"), 64 * 1024, "64 KiB")


@dataclass(frozen=True)
class MediaNeed:
    """One Qiniu object to upload as WeChat temporary media before the send."""

    role: str  # "media" or "thumb": where its media_id goes in the body
    limit: MediaLimit
    key: str  # the Qiniu key: the cache is per key
    url: str | None  # where to download it (resolved before the send)
    size: int | None  # Qiniu's size, when known

    @property
    def extension(self) -> str:
        return PurePosixPath(self.key).suffix.lower().removeprefix(".")

    @property
    def upload_name(self) -> str:
        """The multipart file name: WeChat reads the type from its extension."""
        return f"{self.limit.media_type}.{self.extension}"


def refusal(message_type: MessageType) -> str | None:
    """Why this channel cannot carry ``message_type``, or None when it can."""
    if message_type in SUPPORTED_TYPES:
        return None
    return (
        f"messageType {int(message_type)} ({message_type.name.lower()}) cannot be sent "
        f"through the {NAME} channel: WeChat has no such customer-service message"
    )


# ---------------------------------------------------------------------------
# Submit-time checks


def check_message(message: Message, templates: dict[str, str]) -> None:
    """Raise InvalidMessage (MessageTooLarge for sizes) for what WeChat would refuse."""
    reason = refusal(message.messageType)
    if reason is not None:
        raise InvalidMessage([FieldError("messageType", reason)])
    info = message.messageInfo
    errors: list[FieldError] = []
    if isinstance(info, TextInfo):
        size = len(info.textMessage.encode())
        if size > TEXT_MAX_BYTES:
            raise MessageTooLarge(
                [
                    FieldError(
                        "messageInfo.textMessage",
                        f"is {size} bytes in UTF-8; WeChat takes at most {TEXT_MAX_BYTES}",
                    )
                ]
            )
    elif isinstance(info, TemplateInfo):
        errors.extend(_template_problems(message, templates))
    for need in media_needs(message):
        field = f"messageInfo.{'thumbMessage' if need.role == 'thumb' else _key_field(info)}"
        if need.extension not in need.limit.extensions:
            errors.append(
                FieldError(
                    field,
                    f"WeChat {need.limit.media_type} media must be "
                    f"{'/'.join(need.limit.extensions)}, not {need.extension or 'untyped'}",
                )
            )
        elif need.size is not None and need.size > need.limit.max_bytes:
            limit = f"{need.limit.described} of {need.limit.media_type}"
            raise MessageTooLarge(
                [FieldError(field, f"is {need.size} bytes; WeChat takes at most {limit}")]
            )
    if errors:
        raise InvalidMessage(errors)


def _key_field(info: object) -> str:
    if isinstance(info, ImageInfo):
        return "imageMessage"
    return "voiceMessage" if isinstance(info, VoiceInfo) else "videoMessage"


def _template_problems(message: Message, templates: dict[str, str]) -> list[FieldError]:
    template = _template_of(message)
    if template is None:
        return [FieldError("ext.template", "is required for a template message (type 9)")]
    problems = []
    if str(template.templetId) not in templates:
        problems.append(
            FieldError(
                "ext.template.templetId",
                f"{template.templetId} has no WeChat template_id configured for this app",
            )
        )
    try:
        template_data(template.content)
    except ValueError as exc:
        problems.append(FieldError("ext.template.content", str(exc)))
    return problems


# ---------------------------------------------------------------------------
# Bodies


def media_needs(message: Message) -> list[MediaNeed]:
    """The uploads a message needs, in order (the video before its thumbnail)."""
    info = message.messageInfo
    if isinstance(info, ImageInfo):
        return [MediaNeed("media", IMAGE, info.imageMessage, info.fileUrl, info.fileLength)]
    if isinstance(info, VoiceInfo):
        return [MediaNeed("media", VOICE, info.voiceMessage, info.fileUrl, info.fileLength)]
    if isinstance(info, VideoInfo):
        needs = [MediaNeed("media", VIDEO, info.videoMessage, info.fileUrl, info.fileLength)]
        # Only a thumbnail the caller named: Qiniu's frame grab has no size limit we control.
        if info.thumbMessage is not None:
            needs.append(
                MediaNeed(
                    "thumb", THUMB, info.thumbMessage, info.thumbFileUrl, info.thumbFileLength
                )
            )
        return needs
    return []


def custom_body(message: Message, media_ids: dict[str, str]) -> dict[str, Any]:
    """The ``/cgi-bin/message/custom/send`` body; ``media_ids`` by :attr:`MediaNeed.role`."""
    info = message.messageInfo
    body: dict[str, Any] = {"touser": message.to}
    if isinstance(info, TextInfo):
        body.update(msgtype="text", text={"content": info.textMessage})
    elif isinstance(info, ImageInfo | VoiceInfo):
        kind = "image" if isinstance(info, ImageInfo) else "voice"
        body.update({"msgtype": kind, kind: {"media_id": _media_id(media_ids, "media")}})
    elif isinstance(info, VideoInfo):
        video: dict[str, Any] = {"media_id": _media_id(media_ids, "media")}
        if "thumb" in media_ids:
            video["thumb_media_id"] = media_ids["thumb"]
        if info.title is not None:
            video["title"] = info.title
        if info.description is not None:
            video["description"] = info.description
        body.update(msgtype="video", video=video)
    elif isinstance(info, NewsInfo):  # CustomNewsInfo too: its extra fields have no place
        article = {"title": info.title, "url": info.url}
        if info.description is not None:
            article["description"] = info.description
        if info.picUrl is not None:
            article["picurl"] = info.picUrl
        body.update(msgtype="news", news={"articles": [article]})
    else:
        raise TypeError(f"no WeChat customer-service mapping for {type(info).__name__}")
    return body


def _media_id(media_ids: dict[str, str], role: str) -> str:
    if role not in media_ids:
        raise MediaError("media_unresolved", f"no WeChat media_id for the {role}", retryable=False)
    return media_ids[role]


def template_body(message_id: str, message: Message, templates: dict[str, str]) -> dict[str, Any]:
    """The ``/cgi-bin/message/template/send`` body of a template message (type 9)."""
    template = _template_of(message)
    if template is None or str(template.templetId) not in templates:
        raise InvalidMessage(
            [FieldError("ext.template.templetId", "has no WeChat template_id configured")]
        )
    return {
        "touser": message.to,
        "template_id": templates[str(template.templetId)],
        "data": template_data(template.content),
        # WeChat sends one message per (openid, client_msg_id) within 10 minutes.
        "client_msg_id": message_id,
    }


def template_data(content: str) -> dict[str, dict[str, str]]:
    """``ext.template.content`` (a JSON object) as WeChat's ``data``.

    ``{"first": "Hello"}`` and ``{"first": {"value": "Hello", "color": "#173177"}}``
    both become ``{"first": {"value": "Hello", ...}}``; numbers and booleans as text.
    """
    parsed = json.loads(content)
    if not isinstance(parsed, dict) or not parsed:
        raise ValueError("must be a non-empty JSON object of template keys for WeChat")
    data: dict[str, dict[str, str]] = {}
    for key, item in parsed.items():
        if isinstance(item, dict):
            if "value" not in item or not set(item) <= {"value", "color"}:
                raise ValueError(f"{key}: an object must be {{'value': ..., 'color'?: ...}}")
            entry = {"value": _as_text(item["value"], key)}
            if "color" in item:
                entry["color"] = _as_text(item["color"], key)
            data[key] = entry
        else:
            data[key] = {"value": _as_text(item, key)}
    return data


def _as_text(value: Any, key: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"{key}: values must be text, numbers or booleans")


def _template_of(message: Message) -> Template | None:
    return message.ext.template if message.ext else None


def summary(message: Message) -> str:
    """A short text standing for the message in a fallback template."""
    info = message.messageInfo
    if isinstance(info, TextInfo | TemplateInfo):
        text = info.textMessage
    elif isinstance(info, NewsInfo) or (isinstance(info, VideoInfo) and info.title):
        text = info.title or ""
    else:
        text = f"[{message.messageType.name.lower()}]"
    return text if len(text) <= SUMMARY_MAX_CHARS else text[: SUMMARY_MAX_CHARS - 1] + "…"


def fallback_body(message_id: str, message: Message, fallback: WindowFallback) -> dict[str, Any]:
    """The template message sent instead of a customer-service message refused for the window."""
    text = summary(message)
    body: dict[str, Any] = {
        "touser": message.to,
        "template_id": fallback.template_id,
        "data": {
            key: {"value": value.replace(SUMMARY_PLACEHOLDER, text)}
            for key, value in fallback.data.items()
        },
        "client_msg_id": message_id,
    }
    if fallback.url is not None:
        body["url"] = fallback.url
    return body
