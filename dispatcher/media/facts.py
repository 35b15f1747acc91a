"""What Qiniu says about an object, and what we say about a file, without I/O:
``stat``, ``?avinfo`` and ``?imageInfo`` parsed, the Qiniu etag, MIME types
and extensions (docs/providers.md, "Qiniu")."""

from __future__ import annotations

import base64
import hashlib
import mimetypes
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

BLOCK_SIZE = 4 * 1024 * 1024
"""Qiniu's etag block, the v1 resumable block and the SDK's default v2 part size."""

# Types Python's mimetypes table may not know on every platform.
_EXTRA_TYPES = {".amr": "audio/amr", ".aac": "audio/aac", ".mp3": "audio/mpeg", ".mp4": "video/mp4"}


@dataclass(frozen=True)
class ObjectStat:
    """An object's metadata from ``stat``; ``put_time`` is in 100-ns units since the epoch."""

    fsize: int
    mime_type: str
    hash: str
    put_time: int


@dataclass(frozen=True)
class AvInfo:
    """What ``?avinfo`` says about an audio or video file.

    ``width``/``height`` are those of the first video stream as displayed
    (swapped for a 90/270 degree ``rotate`` tag); ``None`` for audio.
    """

    duration: float | None
    width: int | None
    height: int | None
    size: int | None
    format_name: str | None = None


@dataclass(frozen=True)
class ImageMeta:
    """What ``?imageInfo`` says about an image."""

    width: int
    height: int
    size: int | None
    format: str


def qiniu_etag(source: bytes | BinaryIO) -> str:
    """Qiniu's content hash: SHA-1 per 4 MiB block, prefixed 0x16 (one block) or 0x96 (more)."""
    stream: BinaryIO = BytesIO(source) if isinstance(source, bytes) else source
    digests: list[bytes] = []
    while True:
        block = stream.read(BLOCK_SIZE)
        if not block and digests:
            break
        digests.append(hashlib.sha1(block).digest())
        if len(block) < BLOCK_SIZE:
            break
    if len(digests) == 1:
        payload = b"\x16" + digests[0]
    else:
        payload = b"\x96" + hashlib.sha1(b"".join(digests)).digest()
    return base64.urlsafe_b64encode(payload).decode()


def parse_avinfo(body: dict[str, Any]) -> AvInfo:
    """Read avinfo's ffprobe-like JSON, where most numbers are strings."""
    fmt = body.get("format") or {}
    streams = [s for s in body.get("streams") or [] if isinstance(s, dict)]
    duration = as_float(fmt.get("duration"))
    if duration is None:
        # Some containers only carry per-stream durations.
        durations = [d for d in (as_float(s.get("duration")) for s in streams) if d is not None]
        duration = max(durations) if durations else None
    width = height = None
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    if video is not None:
        width, height = as_int(video.get("width")), as_int(video.get("height"))
        rotate = as_int((video.get("tags") or {}).get("rotate"))
        if rotate is not None and rotate % 180 == 90:
            width, height = height, width
    return AvInfo(
        duration=duration,
        width=width,
        height=height,
        size=as_int(fmt.get("size")),
        format_name=fmt.get("format_name") if isinstance(fmt.get("format_name"), str) else None,
    )


def parse_image_info(body: dict[str, Any]) -> ImageMeta | None:
    """Read imageInfo's JSON; ``None`` when it lacks a usable width and height."""
    width, height = as_int(body.get("width")), as_int(body.get("height"))
    if not width or not height:
        return None
    return ImageMeta(
        width=width,
        height=height,
        size=as_int(body.get("size")),
        format=str(body.get("format") or ""),
    )


def guess_mime_type(name: str) -> str:
    """The MIME type Qiniu should store for a file name."""
    suffix = Path(name).suffix.lower()
    return _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def sniff_extension(head: bytes) -> str:
    """The file extension (with the dot) of media bytes, from their magic numbers; '' if unknown."""
    if head.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return ".png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    if head[4:8] == b"ftyp":
        return ".mp4"
    if head.startswith(b"#!AMR"):
        return ".amr"
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ".mp3"
    if head[:2] in (b"\xff\xf1", b"\xff\xf9"):
        return ".aac"
    return ""


def as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if result == result and result >= 0 else None  # NaN and negatives: unknown


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return int(number) if number is not None else None
