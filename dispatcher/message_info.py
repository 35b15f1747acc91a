"""The ``messageInfo`` of each message type, with its limits (README.md, "Message types").

One pydantic model per type; :data:`INFO_MODELS` maps a type to its model.
Caller-given media URLs must be on the configured Qiniu domain (passed in the
validation context as ``media_domain``): we never fetch arbitrary addresses.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

MiB = 1024 * 1024
VIDEO_MAX_BYTES = 10 * MiB  # strictly less than (seed: 小于10M)
THUMB_MAX_BYTES = 64 * 1024  # at most (seed: 小于等于64K)
IMAGE_MAX_BYTES = 10 * MiB
VOICE_MAX_BYTES = 2 * MiB
VOICE_MAX_SECONDS = 60
MAX_CUSTOM_EXTS = 16  # Easemob's cap on customExts entries


class MessageType(IntEnum):
    TEXT = 1
    IMAGE = 2
    VOICE = 3
    VIDEO = 4
    LOCATION = 5
    PASS_THROUGH = 6
    NEWS = 7
    CUSTOM_NEWS = 8
    TEMPLATE = 9
    EXTENSION = 10

    @classmethod
    def of(cls, value: Any) -> MessageType | None:
        """The type ``value`` names, or None for anything but one of the integers."""
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        try:
            return cls(value)
        except ValueError:
            return None


MEDIA_TYPES = frozenset({MessageType.IMAGE, MessageType.VOICE, MessageType.VIDEO})


class InfoModel(BaseModel):
    """Base of every ``messageInfo`` model: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    @field_validator("*")
    @classmethod
    def _plain_text(cls, value: Any) -> Any:
        if isinstance(value, str) and CONTROL_IN_TEXT.search(value):
            raise ValueError("must not contain control characters other than tab and newlines")
        return value


def _media_key(value: str, extensions: tuple[str, ...]) -> str:
    if not value or len(value.encode()) > 750 or "\x00" in value:
        raise ValueError("must be a Qiniu key of 1..750 bytes")
    if problem := _ambiguous_key(value):
        raise ValueError(problem)
    if not value.lower().endswith(tuple(f".{ext}" for ext in extensions)):
        raise ValueError(f"must be a file name ending in {'/'.join(extensions)}")
    return value


def _media_url(value: str | None, info: ValidationInfo) -> str | None:
    """A caller-given URL must be on our Qiniu domain: we never fetch arbitrary addresses."""
    if value is None:
        return None
    domain = (info.context or {}).get("media_domain")
    parsed = urlsplit(_web_url(value))
    if not domain:
        raise ValueError("media URLs are accepted only when DISPATCHER_QINIU_DOMAIN is configured")
    allowed = urlsplit(domain)
    if parsed.hostname != allowed.hostname or (parsed.port or None) != (allowed.port or None):
        raise ValueError(f"must be on the configured Qiniu domain {allowed.netloc}")
    return value


# ---------------------------------------------------------------------------
# Input hardening (docs/security.md): control characters, media keys, URLs

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
CONTROL_IN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters a text field refuses: all but tab, line feed and carriage return."""


def _ambiguous_key(key: str) -> str | None:
    """Why a media key could be read as another object than it names, or None.

    Qiniu keys are flat strings, but anything that resolves paths (a CDN, a proxy,
    a download tool) would read ``a/../b.jpg`` as ``b.jpg``: one key, one object.
    """
    if CONTROL_CHARACTERS.search(key):
        return "must not contain control characters"
    if "\\" in key:
        return "must not contain backslashes"
    if key.startswith("/"):
        return "must not start with '/'"
    if any(segment in ("", ".", "..") for segment in key.split("/")):
        return "must not contain empty, '.' or '..' path segments"
    return None


def _web_url(value: str) -> str:
    """An absolute http(s) URL: never javascript:, data:, file: or a relative one."""
    parsed = urlsplit(value)
    if CONTROL_CHARACTERS.search(value) or " " in value:
        raise ValueError("must be a URL without spaces or control characters")
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return value


PositiveInt = Annotated[int, Field(gt=0)]


class TextInfo(InfoModel):
    textMessage: str = Field(min_length=1, max_length=5000)


class ImageInfo(InfoModel):
    imageMessage: str
    fileUrl: str | None = None
    fileLength: int | None = Field(default=None, gt=0, le=IMAGE_MAX_BYTES)
    imageWidth: PositiveInt | None = None
    imageHeight: PositiveInt | None = None

    _key = field_validator("imageMessage")(lambda v: _media_key(v, ("jpg", "jpeg", "png", "gif")))
    _url = field_validator("fileUrl")(_media_url)


class VoiceInfo(InfoModel):
    voiceMessage: str
    fileUrl: str | None = None
    fileLength: int | None = Field(default=None, gt=0, le=VOICE_MAX_BYTES)
    duration: int | None = Field(default=None, ge=0, le=VOICE_MAX_SECONDS)

    _key = field_validator("voiceMessage")(lambda v: _media_key(v, ("amr", "mp3", "aac")))
    _url = field_validator("fileUrl")(_media_url)


class VideoInfo(InfoModel):
    """Exactly the seed's video table (2.1.4)."""

    videoMessage: str
    thumbMessage: str | None = None
    title: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=1024)
    fileUrl: str | None = None
    fileLength: int | None = Field(default=None, gt=0, lt=VIDEO_MAX_BYTES)
    duration: int | None = Field(default=None, ge=0)
    thumbFileUrl: str | None = None
    thumbFileLength: int | None = Field(default=None, gt=0, le=THUMB_MAX_BYTES)
    imageWidth: PositiveInt | None = None
    imageHeight: PositiveInt | None = None

    _key = field_validator("videoMessage")(lambda v: _media_key(v, ("mp4",)))
    _thumb = field_validator("thumbMessage")(
        lambda v: None if v is None else _media_key(v, ("jpg", "jpeg"))
    )
    _url = field_validator("fileUrl", "thumbFileUrl")(_media_url)


class LocationInfo(InfoModel):
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=180)
    address: str = Field(min_length=1, max_length=512)


class PassThroughInfo(InfoModel):
    action: str = Field(min_length=1, max_length=256)


class NewsInfo(InfoModel):
    title: str = Field(min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=1024)
    url: str = Field(min_length=1, max_length=2048)
    picUrl: str | None = Field(default=None, max_length=2048)

    _urls = field_validator("url", "picUrl")(lambda v: None if v is None else _web_url(v))


class CustomNewsInfo(NewsInfo):
    """News plus any extra string fields, all passed on as customExts."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _extras_are_strings(self) -> CustomNewsInfo:
        extras = self.model_extra or {}
        for name, value in extras.items():
            if not isinstance(value, str):
                raise ValueError(f"extra field {name!r} must be a string")
            if CONTROL_IN_TEXT.search(value):
                raise ValueError(f"extra field {name!r} must not contain control characters")
        if len(self.model_dump(exclude_none=True)) > MAX_CUSTOM_EXTS:
            raise ValueError(f"at most {MAX_CUSTOM_EXTS} fields in all (Easemob's customExts cap)")
        return self


class TemplateInfo(InfoModel):
    textMessage: str = Field(min_length=1, max_length=5000, description="fallback text")


class ExtensionInfo(InfoModel):
    textMessage: str = Field(min_length=1, max_length=5000, description="fallback text")


MessageInfo = (
    TextInfo
    | ImageInfo
    | VoiceInfo
    | VideoInfo
    | LocationInfo
    | PassThroughInfo
    | NewsInfo
    | CustomNewsInfo
    | TemplateInfo
    | ExtensionInfo
)

INFO_MODELS: dict[MessageType, type[InfoModel]] = {
    MessageType.TEXT: TextInfo,
    MessageType.IMAGE: ImageInfo,
    MessageType.VOICE: VoiceInfo,
    MessageType.VIDEO: VideoInfo,
    MessageType.LOCATION: LocationInfo,
    MessageType.PASS_THROUGH: PassThroughInfo,
    MessageType.NEWS: NewsInfo,
    MessageType.CUSTOM_NEWS: CustomNewsInfo,
    MessageType.TEMPLATE: TemplateInfo,
    MessageType.EXTENSION: ExtensionInfo,
}
