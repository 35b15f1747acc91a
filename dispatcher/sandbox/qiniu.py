"""A local Qiniu Kodo (providers.md B9): upload host, RS host and download domain on one port.

Point ``DISPATCHER_QINIU_UP_HOST``, ``DISPATCHER_QINIU_RS_HOST`` and
``DISPATCHER_QINIU_DOMAIN`` at the same URL. The simulator checks the same
credentials the real service does (upload tokens, QBox and Qiniu management
tokens, private download tokens), keeps objects in memory and answers with
Kodo's status codes and ``{"error": ...}`` bodies, with an ``X-Reqid`` on
every reply because the SDK treats a 200 without one as "server is not qiniu".

Served paths:

* ``POST /`` form upload; v2 multipart ``/buckets/<bucket>/objects/<b64 key|~>/uploads[/<id>[/<n>]]``;
  v1 ``/mkblk``, ``/bput``, ``/mkfile``.
* ``GET|POST /stat/<EncodedEntryURI>``.
* ``GET /<key>`` with ``?avinfo``, ``?imageInfo``, ``?vframe/jpg/offset/<s>``; media facts
  come from the bytes (MP4 ``mvhd``/``tkhd``, JPEG SOF, PNG IHDR, GIF, AMR) or
  from metadata placed with ``PUT /_sandbox/objects/<key>``.
* ``/_sandbox/requests`` and ``/_sandbox/faults`` (see :mod:`dispatcher.sandbox.control`),
  ``GET|DELETE /_sandbox/objects``, ``GET|PUT|DELETE /_sandbox/objects/<key>``.

A key that starts like one of the API paths (``stat/…``, ``buckets/…``,
``mkblk/…``, ``_sandbox/…``) cannot be downloaded here, since one port plays
every host.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import itertools
import json
import math
import mimetypes
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.sandbox.control import ASGIApp, Message, Receive, Scope, Send, install_control

Clock = Callable[[], float]

BLOCK_SIZE = 4 * 1024 * 1024
MIN_PART_SIZE = 1024 * 1024
MAX_PARTS = 10_000
UPLOAD_TTL = 7 * 24 * 3600  # how long a multipart upload id or a v1 ctx stays valid
QINIU_DATE_SKEW = 15 * 60  # X-Qiniu-Date accepted this far from our clock
DEMO_KEYS = {"demo.mp4": "video/mp4", "demo.jpg": "image/jpeg", "demo.amr": "audio/amr"}
_EXTRA_TYPES = {".amr": "audio/amr", ".aac": "audio/aac", ".mp3": "audio/mpeg", ".mp4": "video/mp4"}
_MP4_FORMAT = ("mov,mp4,m4a,3gp,3g2,mj2", "QuickTime / MOV")
_AUDIO_FORMATS = {
    "audio/amr": ("amr", "3GPP AMR", "amr_nb", "AMR-NB (Adaptive Multi-Rate NarrowBand)", 8000, 1),
    "audio/mpeg": (
        "mp3",
        "MP2/3 (MPEG audio layer 2/3)",
        "mp3",
        "MP3 (MPEG audio layer 3)",
        44100,
        2,
    ),
    "audio/aac": (
        "aac",
        "raw ADTS AAC (Advanced Audio Coding)",
        "aac",
        "AAC (Advanced Audio Coding)",
        44100,
        2,
    ),
}
_AMR_FRAME_BYTES = {
    b"#!AMR\n": (12, 13, 15, 17, 19, 20, 26, 31, 5, 6, 5, 5, 0, 0, 0, 0),
    b"#!AMR-WB\n": (17, 23, 32, 36, 40, 46, 50, 58, 60, 5, 0, 0, 0, 0, 0, 0),
}
_INVALID_AMR_MODES = {b"#!AMR\n": range(12, 15), b"#!AMR-WB\n": range(10, 14)}


class QiniuError(Exception):
    """A Kodo error answer: ``status`` with ``{"error": text}`` (plus ``code`` for fops)."""

    def __init__(self, status: int, error: str, *, with_code: bool = False) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.error = error
        self.with_code = with_code

    def body(self) -> dict[str, Any]:
        return (
            {"code": self.status, "error": self.error} if self.with_code else {"error": self.error}
        )


# ---------------------------------------------------------------------------
# Signatures (providers.md B1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def b64url_decode(text: str) -> bytes:
    """URL-safe Base64 with or without padding; raises ValueError."""
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None


def sign(secret_key: str, data: bytes) -> str:
    return b64url(hmac.new(secret_key.encode(), data, hashlib.sha1).digest())


def qiniu_etag(data: bytes) -> str:
    """Kodo's hash of ``data`` (4 MiB blocks; 0x16 one block, 0x96 more)."""
    blocks = [data[i : i + BLOCK_SIZE] for i in range(0, len(data), BLOCK_SIZE)] or [b""]
    digests = [hashlib.sha1(block).digest() for block in blocks]
    if len(digests) == 1:
        return b64url(b"\x16" + digests[0])
    return b64url(b"\x96" + hashlib.sha1(b"".join(digests)).digest())


def canonical_header(name: str) -> str:
    """``x-qiniu-date`` -> ``X-Qiniu-Date``, as Go's CanonicalMIMEHeaderKey."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


# ---------------------------------------------------------------------------
# Media probes: just enough of each format to answer avinfo and imageInfo


@dataclass(frozen=True)
class Track:
    kind: str  # "video", "audio" or the raw handler type
    duration: float | None
    width: int = 0
    height: int = 0
    codec_tag: str = ""


@dataclass(frozen=True)
class MediaProbe:
    """What the bytes say: container, duration and tracks (for avinfo)."""

    format_mime: str
    duration: float | None
    tracks: tuple[Track, ...]


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of each ISO-BMFF box in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size = struct.unpack_from(">Q", data, pos + 8)[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, payload, box_end in _boxes(data, start, end):
        if found == kind:
            return payload, box_end
    return None


def _time_header(data: bytes, pos: int) -> tuple[int, int]:
    """(timescale, duration) of an ``mvhd`` or ``mdhd`` payload, version 0 or 1."""
    if data[pos] == 1:
        timescale, duration = struct.unpack_from(">IQ", data, pos + 20)
    else:
        timescale, duration = struct.unpack_from(">II", data, pos + 12)
    return timescale, duration


def probe_mp4(data: bytes) -> MediaProbe | None:
    """Duration from ``mvhd``, each track's size from ``tkhd`` and kind from ``hdlr``."""
    if data[4:8] != b"ftyp":
        return None
    try:
        moov = _child(data, 0, len(data), b"moov")
        if moov is None:
            return None
        mvhd = _child(data, *moov, b"mvhd")
        duration = None
        if mvhd is not None:
            timescale, units = _time_header(data, mvhd[0])
            duration = units / timescale if timescale else None
        tracks = []
        for kind, start, end in _boxes(data, *moov):
            if kind == b"trak":
                tracks.append(_probe_track(data, start, end))
    except (struct.error, IndexError):
        return None
    return MediaProbe("video/mp4", duration, tuple(tracks))


def _probe_track(data: bytes, start: int, end: int) -> Track:
    width = height = 0
    tkhd = _child(data, start, end, b"tkhd")
    if tkhd is not None:
        offset = 88 if data[tkhd[0]] == 1 else 76
        width, height = (v >> 16 for v in struct.unpack_from(">II", data, tkhd[0] + offset))
    handler, duration, codec = "", None, ""
    mdia = _child(data, start, end, b"mdia")
    if mdia is not None:
        mdhd = _child(data, *mdia, b"mdhd")
        if mdhd is not None:
            timescale, units = _time_header(data, mdhd[0])
            duration = units / timescale if timescale else None
        hdlr = _child(data, *mdia, b"hdlr")
        if hdlr is not None:
            handler = data[hdlr[0] + 8 : hdlr[0] + 12].decode("latin-1")
        stsd = _stsd(data, *mdia)
        if stsd is not None and struct.unpack_from(">I", data, stsd + 4)[0] > 0:
            codec = data[stsd + 12 : stsd + 16].decode("latin-1")
    kind = {"vide": "video", "soun": "audio"}.get(handler, handler)
    return Track(kind, duration, width, height, codec)


def _stsd(data: bytes, start: int, end: int) -> int | None:
    minf = _child(data, start, end, b"minf")
    stbl = _child(data, *minf, b"stbl") if minf else None
    stsd = _child(data, *stbl, b"stsd") if stbl else None
    return stsd[0] if stsd else None


def probe_amr(data: bytes) -> MediaProbe | None:
    """AMR-NB/WB: 20 ms per frame, frame sizes from each frame's mode."""
    for magic, sizes in _AMR_FRAME_BYTES.items():
        if data.startswith(magic):
            pos, frames = len(magic), 0
            while pos < len(data):
                mode = (data[pos] >> 3) & 0x0F
                if mode in _INVALID_AMR_MODES[magic]:
                    break
                pos += 1 + sizes[mode]
                frames += 1
            duration = frames * 0.02
            return MediaProbe("audio/amr", duration, (Track("audio", duration, codec_tag="samr"),))
    return None


def probe_image(data: bytes) -> tuple[str, int, int, str] | None:
    """(format, width, height, colorModel) from a JPEG SOF, PNG IHDR or GIF header."""
    try:
        if data.startswith(b"\xff\xd8"):
            return _probe_jpeg(data)
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height, depth, color = struct.unpack_from(">IIBB", data, 16)
            model = {0: "gray", 3: "palette"}.get(color, "nrgba")
            return "png", width, height, f"{model}16" if depth == 16 else model
        if data[:6] in (b"GIF87a", b"GIF89a"):
            width, height = struct.unpack_from("<HH", data, 6)
            return "gif", width, height, "palette"
    except (struct.error, IndexError):
        return None
    return None


def _probe_jpeg(data: bytes) -> tuple[str, int, int, str] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width, components = struct.unpack_from(">HHB", data, pos + 5)
            model = {1: "gray", 3: "ycbcr", 4: "cmyk"}.get(components, "ycbcr")
            return "jpeg", width, height, model
        if marker == 0xDA:  # scan data without a frame header first: not an image we know
            return None
        pos += 2 + length
    return None


def gif_frames(data: bytes) -> int:
    """Frames in a GIF (image descriptors), 1 when the stream cannot be walked."""
    try:
        pos = 13
        if data[10] & 0x80:
            pos += 3 * (2 ** ((data[10] & 0x07) + 1))
        frames = 0
        while pos < len(data):
            block = data[pos]
            if block == 0x3B:
                break
            if block == 0x21:
                pos += 2
            elif block == 0x2C:
                frames += 1
                flags = data[pos + 9]
                pos += 10 + (3 * (2 ** ((flags & 0x07) + 1)) if flags & 0x80 else 0) + 1
            else:
                break
            while data[pos]:  # data sub-blocks
                pos += data[pos] + 1
            pos += 1
        return max(frames, 1)
    except IndexError:
        return 1


# ---------------------------------------------------------------------------
# The bucket


def guess_mime(key: str) -> str:
    suffix = key[key.rfind(".") :].lower() if "." in key else ""
    return _EXTRA_TYPES.get(suffix) or mimetypes.guess_type(key)[0] or "application/octet-stream"


def _put_time(clock: Clock) -> int:
    return int(clock() * 10_000_000)  # Kodo counts 100-ns units


@dataclass
class StoredObject:
    """One object: bytes when uploaded, or only metadata when placed by the control API."""

    key: str
    data: bytes | None
    fsize: int
    hash: str
    mime_type: str
    put_time: int
    duration: float | None = None
    width: int | None = None
    height: int | None = None

    def stat(self) -> dict[str, Any]:
        return {
            "fsize": self.fsize,
            "hash": self.hash,
            "mimeType": self.mime_type,
            "putTime": self.put_time,
            "type": 0,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "key": self.key,
            **self.stat(),
            "hasData": self.data is not None,
            "duration": self.duration,
            "width": self.width,
            "height": self.height,
        }

    @property
    def is_video(self) -> bool:
        return self.mime_type.startswith("video/")


@dataclass
class _Multipart:
    bucket: str
    key: str | None
    expires_at: int
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class _Block:
    size: int
    data: bytearray
    expires_at: int


class ObjectMetadata(BaseModel):
    """Body of ``PUT /_sandbox/objects/{key}``: an object without bytes."""

    model_config = ConfigDict(extra="forbid")

    fsize: int = Field(default=0, ge=0)
    mimeType: str | None = None
    duration: float | None = Field(default=None, ge=0)
    width: int | None = Field(default=None, gt=0)
    height: int | None = Field(default=None, gt=0)
    hash: str | None = None


class QiniuSimulator:
    """Credentials, objects and upload sessions of one simulated bucket; thread-safe."""

    def __init__(
        self,
        *,
        access_key: str,
        secret_key: str,
        bucket: str,
        private: bool = False,
        clock: Clock = time.time,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.private = private
        self.clock = clock
        self._lock = threading.Lock()
        self._objects: dict[str, StoredObject] = {}
        self._multiparts: dict[str, _Multipart] = {}
        self._blocks: dict[str, _Block] = {}
        self._reqids = itertools.count(1)

    def next_reqid(self) -> str:
        return f"sandbox{next(self._reqids):012d}{secrets.token_hex(4)}"

    # -- objects ---------------------------------------------------------------

    def get(self, key: str) -> StoredObject | None:
        with self._lock:
            return self._objects.get(key)

    def objects(self) -> list[StoredObject]:
        with self._lock:
            return sorted(self._objects.values(), key=lambda o: o.key)

    def clear(self) -> int:
        with self._lock:
            count = len(self._objects)
            self._objects.clear()
            self._multiparts.clear()
            self._blocks.clear()
            return count

    def delete(self, key: str) -> bool:
        with self._lock:
            return self._objects.pop(key, None) is not None

    def put_bytes(self, key: str, data: bytes, mime_type: str | None = None) -> StoredObject:
        """Store ``data`` under ``key`` unconditionally (seeding and the control API)."""
        obj = self._new_object(key, data, mime_type)
        with self._lock:
            self._objects[key] = obj
        return obj

    def put_metadata(self, key: str, meta: ObjectMetadata) -> StoredObject:
        """Place an object described only by metadata (stat/avinfo/imageInfo answer from it)."""
        digest = meta.hash or qiniu_etag(json.dumps([key, meta.model_dump()]).encode())
        obj = StoredObject(
            key=key,
            data=None,
            fsize=meta.fsize,
            hash=digest,
            mime_type=meta.mimeType or guess_mime(key),
            put_time=_put_time(self.clock),
            duration=meta.duration,
            width=meta.width,
            height=meta.height,
        )
        with self._lock:
            self._objects[key] = obj
        return obj

    def _new_object(self, key: str, data: bytes, mime_type: str | None) -> StoredObject:
        mime = mime_type if mime_type and mime_type != "application/octet-stream" else None
        return StoredObject(
            key=key,
            data=data,
            fsize=len(data),
            hash=qiniu_etag(data),
            mime_type=mime or _sniff_mime(data) or guess_mime(key),
            put_time=_put_time(self.clock),
        )

    def store_upload(
        self, policy: dict[str, Any], key: str, data: bytes, mime_type: str | None
    ) -> StoredObject:
        """Apply the put policy's size and overwrite rules, then store (614 / 413 on refusal)."""
        limit = policy.get("fsizeLimit")
        if isinstance(limit, int) and len(data) > limit:
            raise QiniuError(413, "exceed FsizeLimit")
        minimum = policy.get("fsizeMin")
        if isinstance(minimum, int) and len(data) < minimum:
            raise QiniuError(403, "file size too small")
        obj = self._new_object(key, data, mime_type)
        insert_only = ":" not in str(policy.get("scope", "")) or bool(policy.get("insertOnly"))
        with self._lock:
            existing = self._objects.get(key)
            # Insert-only refuses a different file; the identical one "succeeds" (B1).
            if insert_only and existing is not None and existing.hash != obj.hash:
                raise QiniuError(614, "file exists")
            self._objects[key] = obj
        return obj

    # -- credentials -----------------------------------------------------------

    def check_upload_token(self, token: str | None) -> dict[str, Any]:
        """The put policy of a valid upload token for our bucket; 401/631 otherwise."""
        if not token:
            raise QiniuError(401, "token not specified")
        parts = token.split(":")
        if len(parts) != 3:
            raise QiniuError(401, "bad token")
        access_key, signature, encoded = parts
        if access_key != self.access_key or not hmac.compare_digest(
            signature, sign(self.secret_key, encoded.encode())
        ):
            raise QiniuError(401, "bad token")
        try:
            policy = json.loads(b64url_decode(encoded))
        except ValueError:
            raise QiniuError(401, "bad token") from None
        if not isinstance(policy, dict) or not isinstance(policy.get("scope"), str):
            raise QiniuError(401, "bad token")
        deadline = policy.get("deadline")
        if not isinstance(deadline, int) or deadline < self.clock():
            raise QiniuError(401, "expired token")
        if policy["scope"].split(":", 1)[0] != self.bucket:
            raise QiniuError(631, "no such bucket")
        return policy

    def check_management(
        self,
        authorization: str | None,
        *,
        method: str,
        host: str,
        path_qs: str,
        content_type: str | None,
        qiniu_headers: dict[str, str],
        body: bytes,
    ) -> None:
        """Verify a ``QBox`` or ``Qiniu`` management token (B1); 401 otherwise."""
        if not authorization:
            raise QiniuError(401, "token not specified")
        scheme, _, credential = authorization.partition(" ")
        access_key, _, signature = credential.strip().partition(":")
        if scheme == "QBox":
            data = f"{path_qs}\n".encode()
            if content_type == "application/x-www-form-urlencoded":
                data += body
        elif scheme == "Qiniu":
            lines = [f"{method} {path_qs}", f"Host: {host}"]
            if content_type:
                lines.append(f"Content-Type: {content_type}")
            lines.extend(f"{name}: {value}" for name, value in sorted(qiniu_headers.items()))
            data = ("\n".join(lines) + "\n\n").encode()
            if content_type and content_type != "application/octet-stream":
                data += body
        else:
            raise QiniuError(401, "bad token")
        if access_key != self.access_key or not hmac.compare_digest(
            signature, sign(self.secret_key, data)
        ):
            raise QiniuError(401, "bad token")
        stamp = qiniu_headers.get("X-Qiniu-Date")
        if scheme == "Qiniu" and stamp is not None:
            try:
                at = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
            except ValueError:
                raise QiniuError(401, "bad token") from None
            if abs(at - self.clock()) > QINIU_DATE_SKEW:
                raise QiniuError(401, "expired token")

    def check_download(
        self, url_before_token: str, token: str | None, deadline: str | None
    ) -> None:
        """A private download URL's ``e`` and ``token`` (B1); 401 otherwise."""
        if token is None:
            raise QiniuError(401, "token not specified")
        access_key, _, signature = unquote(token).partition(":")
        if access_key != self.access_key or not hmac.compare_digest(
            signature, sign(self.secret_key, url_before_token.encode())
        ):
            raise QiniuError(401, "bad token")
        if deadline is None or not deadline.isdigit() or int(deadline) < self.clock():
            raise QiniuError(401, "token out of date")

    # -- multipart (v2) and block (v1) uploads ---------------------------------

    def start_multipart(self, bucket: str, key: str | None) -> tuple[str, int]:
        upload_id = secrets.token_hex(16)
        expires_at = int(self.clock()) + UPLOAD_TTL
        with self._lock:
            self._multiparts[upload_id] = _Multipart(bucket, key, expires_at)
        return upload_id, expires_at

    def multipart(self, upload_id: str, bucket: str, key: str | None) -> _Multipart:
        with self._lock:
            upload = self._multiparts.get(upload_id)
        if upload is None or upload.expires_at < self.clock():
            raise QiniuError(612, "no such uploadId")
        if upload.bucket != bucket or upload.key != key:
            raise QiniuError(400, "uploadId does not match this object")
        return upload

    def add_part(self, upload: _Multipart, number: int, data: bytes) -> str:
        etag = qiniu_etag(data)
        with self._lock:
            upload.parts[number] = (etag, data)
        return etag

    def finish_multipart(self, upload_id: str) -> None:
        with self._lock:
            self._multiparts.pop(upload_id, None)

    def make_block(self, size: int, chunk: bytes) -> tuple[str, _Block]:
        block = _Block(size, bytearray(chunk), int(self.clock()) + UPLOAD_TTL)
        block_id = secrets.token_hex(12)
        with self._lock:
            self._blocks[block_id] = block
        return f"{block_id}.{len(block.data)}", block

    def block(self, ctx: str) -> tuple[str, _Block]:
        """The block a ctx names; a stale ctx (its offset has moved on) is invalid (701)."""
        block_id, _, length = ctx.partition(".")
        with self._lock:
            block = self._blocks.get(block_id)
        if block is None or str(len(block.data)) != length or block.expires_at < self.clock():
            raise QiniuError(701, "invalid ctx")
        return block_id, block


def _sniff_mime(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return "video/mp4"
    image = probe_image(data)
    if image is not None:
        return f"image/{image[0]}"
    if data.startswith(b"#!AMR"):
        return "audio/amr"
    return None


# ---------------------------------------------------------------------------
# avinfo / imageInfo answers (shapes of providers.md B6)


def _seconds(value: float | None) -> str:
    return f"{value or 0.0:.6f}"


def _video_stream(index: int, duration: float | None, width: int, height: int) -> dict[str, Any]:
    divisor = math.gcd(width, height) or 1
    frames = int((duration or 0) * 25)
    return {
        "index": index,
        "codec_name": "h264",
        "codec_long_name": "H.264 / AVC / MPEG-4 AVC / MPEG-4 part 10",
        "profile": "High",
        "codec_type": "video",
        "codec_time_base": "1/50",
        "codec_tag_string": "avc1",
        "codec_tag": "0x31637661",
        "width": width,
        "height": height,
        "has_b_frames": 0,
        "sample_aspect_ratio": "1:1",
        "display_aspect_ratio": f"{width // divisor}:{height // divisor}",
        "pix_fmt": "yuv420p",
        "level": 30,
        "r_frame_rate": "25/1",
        "avg_frame_rate": "25/1",
        "time_base": "1/12800",
        "start_time": "0.000000",
        "duration": _seconds(duration),
        "bit_rate": "400000",
        "nb_frames": str(frames),
        "tags": {"language": "und", "handler_name": "VideoHandler"},
    }


def _audio_stream(index: int, duration: float | None, mime: str) -> dict[str, Any]:
    if mime in _AUDIO_FORMATS:
        _, _, codec, long_name, rate, channels = _AUDIO_FORMATS[mime]
        tag_string, tag = "[0][0][0][0]", "0x0000"
    else:  # audio inside an MP4
        codec, long_name, rate, channels = "aac", "AAC (Advanced Audio Coding)", 44100, 2
        tag_string, tag = "mp4a", "0x6134706d"
    bit_rate = 12200 if codec == "amr_nb" else 128000
    return {
        "index": index,
        "codec_name": codec,
        "codec_long_name": long_name,
        "codec_type": "audio",
        "codec_time_base": f"1/{rate}",
        "codec_tag_string": tag_string,
        "codec_tag": tag,
        "sample_fmt": "fltp",
        "sample_rate": str(rate),
        "channels": channels,
        "bits_per_sample": 0,
        "time_base": f"1/{rate}",
        "start_time": "0.000000",
        "duration": _seconds(duration),
        "bit_rate": str(bit_rate),
        "nb_frames": str(int((duration or 0) * 50)),
        "tags": {"language": "und", "handler_name": "SoundHandler"},
    }


def avinfo_body(obj: StoredObject) -> dict[str, Any]:
    """``?avinfo`` for ``obj``, from its bytes when they parse, else from its metadata."""
    probe = None
    if obj.data is not None:
        probe = probe_mp4(obj.data) or probe_amr(obj.data)
    if probe is not None:
        mime, duration = probe.format_mime, probe.duration
        tracks = [t for t in probe.tracks if t.kind in ("video", "audio")]
    elif obj.mime_type.startswith(("video/", "audio/")) and (
        obj.duration is not None or obj.width is not None
    ):
        mime, duration = obj.mime_type, obj.duration
        tracks = []
        if obj.is_video:
            tracks.append(Track("video", duration, obj.width or 0, obj.height or 0))
        tracks.append(Track("audio", duration))
    else:
        raise QiniuError(400, "invalid data found when processing input", with_code=True)
    streams = [
        _video_stream(i, t.duration or duration, t.width, t.height)
        if t.kind == "video"
        else _audio_stream(i, t.duration or duration, mime)
        for i, t in enumerate(tracks)
    ]
    name, long_name = _AUDIO_FORMATS[mime][:2] if mime in _AUDIO_FORMATS else _MP4_FORMAT
    bit_rate = int(obj.fsize * 8 / duration) if duration else 0
    return {
        "streams": streams,
        "format": {
            "nb_streams": len(streams),
            "nb_programs": 0,
            "format_name": name,
            "format_long_name": long_name,
            "start_time": "0.000000",
            "duration": _seconds(duration),
            "size": str(obj.fsize),
            "bit_rate": str(bit_rate),
            "probe_score": 100,
            "tags": {"major_brand": "isom"} if name == _MP4_FORMAT[0] else {},
        },
    }


def image_info_body(obj: StoredObject) -> dict[str, Any]:
    """``?imageInfo`` for ``obj``, from its header bytes, else from its metadata."""
    probe = probe_image(obj.data) if obj.data is not None else None
    if probe is not None:
        fmt, width, height, model = probe
    elif obj.mime_type.startswith("image/") and obj.width and obj.height:
        fmt = obj.mime_type.removeprefix("image/").replace("jpg", "jpeg")
        width, height = obj.width, obj.height
        model = {"jpeg": "ycbcr", "png": "nrgba", "gif": "palette"}.get(fmt, "ycbcr")
    else:
        raise QiniuError(400, "unsupported format", with_code=True)
    body: dict[str, Any] = {
        "size": obj.fsize,
        "format": fmt,
        "width": width,
        "height": height,
        "colorModel": model,
    }
    if fmt == "gif":
        body["frameNumber"] = gif_frames(obj.data) if obj.data is not None else 1
    return body


# ---------------------------------------------------------------------------
# HTTP plumbing


def _multipart_form(
    body: bytes, content_type: str
) -> dict[str, tuple[bytes, str | None, str | None]]:
    """``name -> (value, filename, content type)`` of a multipart/form-data body.

    Parsed here because FastAPI's forms need python-multipart, which we do not
    depend on; the SDK's bodies are plain RFC 7578.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        raise QiniuError(400, "invalid multipart format: no boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    fields: dict[str, tuple[bytes, str | None, str | None]] = {}
    for raw in body.split(delimiter)[1:]:
        if raw.startswith(b"--"):
            break
        part = raw.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, value = part.partition(b"\r\n\r\n")
        if not sep:
            raise QiniuError(400, "invalid multipart format")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, header_value = line.partition(":")
            headers[name.strip().lower()] = header_value.strip()
        disposition = headers.get("content-disposition", "")
        name_match = re.search(r'(?:^|;)\s*name="([^"]*)"', disposition)
        if not name_match:
            continue
        file_match = re.search(r'filename="([^"]*)"', disposition)
        fields[name_match.group(1)] = (
            value,
            file_match.group(1) if file_match else None,
            headers.get("content-type"),
        )
    return fields


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


class ReqIdMiddleware:
    """Stamp ``X-Reqid`` and ``X-Log`` on every reply, injected faults included."""

    def __init__(self, app: ASGIApp, simulator: QiniuSimulator) -> None:
        self.app = app
        self.simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-reqid" for name, _ in headers):
                    headers.append((b"x-reqid", self.simulator.next_reqid().encode()))
                    headers.append((b"x-log", b"sandbox"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)


def _path_qs(request: Request) -> str:
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = raw_path.decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _uptoken(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme == "UpToken" else None


def _decode_key(encoded: str) -> str | None:
    """``~`` (no key) or a URL-safe Base64 key of the v2 paths."""
    if encoded == "~":
        return None
    try:
        return b64url_decode(encoded).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise QiniuError(400, "invalid argument: bad encoded object key") from None


def _upload_key(policy: dict[str, Any], given: str | None, data: bytes, fname: str | None) -> str:
    """The key an upload lands on: given key > saveKey > content hash, within the scope."""
    _, has_key, scope_key = str(policy["scope"]).partition(":")
    if policy.get("forceSaveKey") and policy.get("saveKey"):
        given = None
    if given is None and has_key and not policy.get("isPrefixalScope"):
        given = scope_key
    if given is None and isinstance(policy.get("saveKey"), str):
        given = _save_key(policy["saveKey"], data, fname)
    key = given if given is not None else qiniu_etag(data)
    if has_key:
        matches = key.startswith(scope_key) if policy.get("isPrefixalScope") else key == scope_key
        if not matches:
            raise QiniuError(403, "key doesn't match scope")
    if "\x00" in key:
        raise QiniuError(400, "key must not contain null byte")
    return key


def _save_key(template: str, data: bytes, fname: str | None) -> str:
    name = fname or ""
    ext = name[name.rfind(".") :] if "." in name else ""
    values = {"etag": qiniu_etag(data), "fname": name, "ext": ext, "fsize": str(len(data))}
    return re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), template)


def _upload_reply(policy: dict[str, Any], obj: StoredObject, fname: str | None) -> Any:
    """``{"hash","key"}``, or the policy's ``returnBody`` with its magic variables filled."""
    template = policy.get("returnBody")
    if not isinstance(template, str):
        return {"hash": obj.hash, "key": obj.key}
    values = {
        "key": json.dumps(obj.key),
        "etag": json.dumps(obj.hash),
        "fname": json.dumps(fname or ""),
        "fsize": str(obj.fsize),
        "mimeType": json.dumps(obj.mime_type),
        "bucket": json.dumps(policy["scope"].split(":", 1)[0]),
    }
    filled = re.sub(r"\$\(([\w.]+)\)", lambda m: values.get(m.group(1), "null"), template)
    try:
        return json.loads(filled)
    except ValueError:
        return {"hash": obj.hash, "key": obj.key}


@functools.lru_cache(maxsize=8)
def _load_asset(name: str) -> bytes:
    return resources.files("dispatcher.sandbox").joinpath("assets", name).read_bytes()


# ---------------------------------------------------------------------------
# The app

# Kodo answers with 6xx/7xx statuses (612 no such file, 614 file exists, 631 no
# such bucket, 701 bad ctx). uvicorn precomputes status lines for 100-599 only
# and raises KeyError on anything else, so add Kodo's codes to its tables: an
# additive, idempotent change that alters no status uvicorn already knew.
KODO_STATUS_PHRASES = {
    608: b"Content Changed",
    612: b"No Such File Or Directory",
    614: b"File Exists",
    616: b"Not Found",
    630: b"Too Many Buckets",
    631: b"No Such Bucket",
    640: b"Invalid Marker",
    701: b"Invalid Ctx",
}


def allow_kodo_status_codes() -> None:
    """Let uvicorn (httptools and h11 protocols) send Kodo's non-standard statuses."""
    try:
        from uvicorn.protocols.http import h11_impl
    except ImportError:  # pragma: no cover - uvicorn without h11 is not a setup we ship
        h11_impl = None  # type: ignore[assignment]
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional
        httptools_impl = None  # type: ignore[assignment]
    for status, phrase in KODO_STATUS_PHRASES.items():
        if h11_impl is not None:
            h11_impl.STATUS_PHRASES.setdefault(status, phrase)
        if httptools_impl is not None:
            httptools_impl.STATUS_LINE.setdefault(status, b"HTTP/1.1 %d %s\r\n" % (status, phrase))


def create_qiniu_app(
    *,
    access_key: str,
    secret_key: str,
    bucket: str,
    private: bool = False,
    clock: Clock = time.time,
) -> FastAPI:
    """The Qiniu simulator; ``app.state.qiniu`` is its :class:`QiniuSimulator`,
    ``app.state.sandbox`` its ledger and fault book. ``clock`` drives deadlines."""
    allow_kodo_status_codes()
    sim = QiniuSimulator(
        access_key=access_key, secret_key=secret_key, bucket=bucket, private=private, clock=clock
    )
    # Docs under /_sandbox/ so browsing them leaves the ledger alone.
    api = FastAPI(
        title="Qiniu Kodo simulator",
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    api.state.qiniu = sim

    @api.exception_handler(QiniuError)
    async def qiniu_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, QiniuError)
        return _json(exc.status, exc.body())

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        text = "Document not found" if exc.status_code == 404 else str(exc.detail)
        return _json(exc.status_code, {"error": text}, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        return _json(400, {"error": f"invalid argument: {exc}"[:500]})

    # -- upload host: form upload ----------------------------------------------

    @api.post("/", tags=["up"])
    async def form_upload(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise QiniuError(400, "invalid multipart format")
        fields = _multipart_form(await request.body(), content_type)
        token = fields.get("token", (b"", None, None))[0].decode("utf-8", "replace") or None
        policy = sim.check_upload_token(token)
        if "file" not in fields:
            raise QiniuError(400, "file not specified")
        data, fname, part_type = fields["file"]
        crc = fields.get("crc32", (b"", None, None))[0].strip()
        if crc and (not crc.isdigit() or int(crc) != binascii.crc32(data) & 0xFFFFFFFF):
            raise QiniuError(406, "crc32 not match")
        given = fields["key"][0].decode("utf-8") if "key" in fields else None
        key = _upload_key(policy, given, data, fname)
        obj = sim.store_upload(policy, key, data, part_type)
        return _json(200, _upload_reply(policy, obj, fname))

    # -- upload host: resumable v2 (what put_file_v2 uses above 8 MiB) ---------

    def _v2_context(
        request: Request, bucket: str, encoded_key: str
    ) -> tuple[dict[str, Any], str | None]:
        policy = sim.check_upload_token(_uptoken(request))  # 631 unless its scope is our bucket
        if bucket != sim.bucket:
            raise QiniuError(631, "no such bucket")
        return policy, _decode_key(encoded_key)

    @api.post("/buckets/{bucket}/objects/{encoded_key}/uploads", tags=["up"])
    async def init_parts(bucket: str, encoded_key: str, request: Request) -> Response:
        policy, key = _v2_context(request, bucket, encoded_key)
        if key is not None:
            _upload_key(policy, key, b"", None)  # refuse a key outside the scope now
        upload_id, expires_at = sim.start_multipart(bucket, key)
        return _json(200, {"uploadId": upload_id, "expireAt": expires_at})

    @api.put("/buckets/{bucket}/objects/{encoded_key}/uploads/{upload_id}/{part}", tags=["up"])
    async def upload_part(
        bucket: str, encoded_key: str, upload_id: str, part: str, request: Request
    ) -> Response:
        _, key = _v2_context(request, bucket, encoded_key)
        upload = sim.multipart(upload_id, bucket, key)
        if not part.isdigit() or not 1 <= int(part) <= MAX_PARTS:
            raise QiniuError(400, "invalid partNumber")
        data = await request.body()
        md5 = hashlib.md5(data).hexdigest()
        expected = request.headers.get("content-md5")
        if expected and expected.lower() != md5:
            raise QiniuError(400, "Content-MD5 not match")
        etag = sim.add_part(upload, int(part), data)
        return _json(200, {"etag": etag, "md5": md5})

    @api.get("/buckets/{bucket}/objects/{encoded_key}/uploads/{upload_id}", tags=["up"])
    async def list_parts(
        bucket: str, encoded_key: str, upload_id: str, request: Request
    ) -> Response:
        _, key = _v2_context(request, bucket, encoded_key)
        upload = sim.multipart(upload_id, bucket, key)
        parts = [
            {"partNumber": n, "etag": etag, "size": len(data)}
            for n, (etag, data) in sorted(upload.parts.items())
        ]
        return _json(
            200,
            {
                "uploadId": upload_id,
                "expireAt": upload.expires_at,
                "partNumberMarker": 0,
                "parts": parts,
            },
        )

    @api.delete("/buckets/{bucket}/objects/{encoded_key}/uploads/{upload_id}", tags=["up"])
    async def abort_parts(
        bucket: str, encoded_key: str, upload_id: str, request: Request
    ) -> Response:
        _, key = _v2_context(request, bucket, encoded_key)
        sim.multipart(upload_id, bucket, key)
        sim.finish_multipart(upload_id)
        return _json(200, {})

    @api.post("/buckets/{bucket}/objects/{encoded_key}/uploads/{upload_id}", tags=["up"])
    async def complete_parts(
        bucket: str, encoded_key: str, upload_id: str, request: Request
    ) -> Response:
        policy, key = _v2_context(request, bucket, encoded_key)
        upload = sim.multipart(upload_id, bucket, key)
        try:
            body = json.loads(await request.body())
            wanted = [(int(p["partNumber"]), str(p["etag"])) for p in body["parts"]]
        except (ValueError, KeyError, TypeError):
            raise QiniuError(400, "invalid argument: parts") from None
        numbers = [n for n, _ in wanted]
        if not wanted or numbers != sorted(set(numbers)):
            raise QiniuError(400, "invalid argument: parts must ascend without repeats")
        chunks = []
        for index, (number, etag) in enumerate(wanted):
            stored = upload.parts.get(number)
            if stored is None or stored[0] != etag:
                raise QiniuError(400, f"invalid part {number}: not uploaded or etag mismatch")
            if index < len(wanted) - 1 and len(stored[1]) < MIN_PART_SIZE:
                raise QiniuError(400, f"part {number} is smaller than 1 MB and not the last")
            chunks.append(stored[1])
        data = b"".join(chunks)
        fname = body.get("fname") if isinstance(body.get("fname"), str) else None
        final_key = _upload_key(policy, key, data, fname)
        mime = body.get("mimeType") if isinstance(body.get("mimeType"), str) else None
        obj = sim.store_upload(policy, final_key, data, mime)
        sim.finish_multipart(upload_id)
        return _json(200, _upload_reply(policy, obj, fname))

    # -- upload host: resumable v1 -----------------------------------------------

    def _block_reply(request: Request, ctx: str, block: _Block, chunk: bytes) -> Response:
        return _json(
            200,
            {
                "ctx": ctx,
                "checksum": b64url(hashlib.sha1(chunk).digest()),
                "crc32": binascii.crc32(chunk) & 0xFFFFFFFF,
                "offset": len(block.data),
                "host": str(request.base_url).rstrip("/"),
                "expired_at": block.expires_at,
            },
        )

    @api.post("/mkblk/{size}", tags=["up"])
    async def make_block(size: str, request: Request) -> Response:
        sim.check_upload_token(_uptoken(request))
        chunk = await request.body()
        if not size.isdigit() or not 0 < int(size) <= BLOCK_SIZE or len(chunk) > int(size):
            raise QiniuError(400, "invalid block size")
        ctx, block = sim.make_block(int(size), chunk)
        return _block_reply(request, ctx, block, chunk)

    @api.post("/bput/{ctx}/{offset}", tags=["up"])
    async def put_chunk(ctx: str, offset: str, request: Request) -> Response:
        sim.check_upload_token(_uptoken(request))
        block_id, block = sim.block(ctx)
        chunk = await request.body()
        if offset != str(len(block.data)) or len(block.data) + len(chunk) > block.size:
            raise QiniuError(400, "invalid offset or chunk size")
        block.data.extend(chunk)
        return _block_reply(request, f"{block_id}.{len(block.data)}", block, chunk)

    @api.post("/mkfile/{fsize}", tags=["up"])
    @api.post("/mkfile/{fsize}/{options:path}", tags=["up"])
    async def make_file(fsize: str, request: Request, options: str = "") -> Response:
        policy = sim.check_upload_token(_uptoken(request))
        segments = [s for s in options.split("/") if s]
        if len(segments) % 2:
            raise QiniuError(400, "invalid argument: mkfile options come in name/value pairs")
        try:
            params = {
                name: b64url_decode(value).decode("utf-8")
                for name, value in zip(segments[::2], segments[1::2], strict=True)
            }
        except (ValueError, UnicodeDecodeError):
            raise QiniuError(400, "invalid argument: bad encoded mkfile option") from None
        ctxs = [c for c in (await request.body()).decode("latin-1").split(",") if c]
        blocks = [sim.block(ctx)[1] for ctx in ctxs]
        if any(len(b.data) != b.size for b in blocks):
            raise QiniuError(400, "block not complete")
        data = b"".join(bytes(b.data) for b in blocks)
        if not fsize.isdigit() or int(fsize) != len(data):
            raise QiniuError(400, "fsize does not match the blocks")
        key = _upload_key(policy, params.get("key"), data, params.get("fname"))
        obj = sim.store_upload(policy, key, data, params.get("mimeType"))
        return _json(200, _upload_reply(policy, obj, params.get("fname")))

    # -- RS host: stat -------------------------------------------------------------

    @api.api_route("/stat/{entry}", methods=["GET", "POST"], tags=["rs"])
    async def stat(entry: str, request: Request) -> Response:
        body = await request.body()
        sim.check_management(
            request.headers.get("authorization"),
            method=request.method,
            host=request.headers.get("host", ""),
            path_qs=_path_qs(request),
            content_type=request.headers.get("content-type"),
            qiniu_headers={
                canonical_header(name): value
                for name, value in request.headers.items()
                if name.lower().startswith("x-qiniu-") and len(name) > len("x-qiniu-")
            },
            body=body,
        )
        try:
            bucket, _, key = b64url_decode(entry).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            raise QiniuError(400, "invalid argument: bad EncodedEntryURI") from None
        if bucket != sim.bucket:
            raise QiniuError(631, "no such bucket")
        obj = sim.get(key)
        if obj is None:
            raise QiniuError(612, "no such file or directory")
        return _json(200, obj.stat())

    # -- control API (before the download catch-all, which would shadow it) ---------

    api.state.sandbox = install_control(api)

    @api.get("/_sandbox/objects", tags=["sandbox"])
    async def list_objects() -> list[dict[str, Any]]:
        return [obj.describe() for obj in sim.objects()]

    @api.delete("/_sandbox/objects", tags=["sandbox"])
    async def clear_objects() -> dict[str, Any]:
        return {"ok": True, "deleted": sim.clear()}

    @api.get("/_sandbox/objects/{key:path}", tags=["sandbox"])
    async def describe_object(key: str) -> Response:
        obj = sim.get(key)
        if obj is None:
            raise QiniuError(612, "no such file or directory")
        return _json(200, obj.describe())

    @api.put("/_sandbox/objects/{key:path}", tags=["sandbox"])
    async def place_object(key: str, request: Request) -> Response:
        """JSON ``{fsize, mimeType, duration, width, height}`` places metadata; other bodies are the bytes."""
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            try:
                meta = ObjectMetadata.model_validate_json(body or b"{}")
            except ValidationError as exc:
                raise QiniuError(
                    400, f"invalid argument: {exc.errors(include_url=False)}"
                ) from None
            return _json(200, sim.put_metadata(key, meta).describe())
        return _json(200, sim.put_bytes(key, body, content_type or None).describe())

    @api.delete("/_sandbox/objects/{key:path}", tags=["sandbox"])
    async def delete_object(key: str) -> dict[str, bool]:
        return {"ok": True, "deleted": sim.delete(key)}

    # -- download domain -------------------------------------------------------------

    @api.api_route("/{key:path}", methods=["GET", "HEAD"], tags=["io"])
    async def download(key: str, request: Request) -> Response:
        raw_path = (request.scope.get("raw_path") or b"").decode("latin-1") or request.url.path
        query = request.scope.get("query_string", b"").decode("latin-1")
        if sim.private:
            # The token signs the whole URL before "&token=" (scheme, host, path, query).
            before, found, token = query.partition("&token=")
            signed = f"{request.url.scheme}://{request.headers.get('host', '')}{raw_path}?{before}"
            deadline = next(
                (p[2:] for p in reversed(before.split("&")) if p.startswith("e=")), None
            )
            sim.check_download(signed, token if found else None, deadline)
        obj = sim.get(unquote(raw_path.removeprefix("/")))
        fop = query.split("&", 1)[0] if query and "=" not in query.split("&", 1)[0] else ""
        if obj is None:
            raise QiniuError(404, "Document not found", with_code=bool(fop))
        if fop == "avinfo":
            return _json(200, avinfo_body(obj))
        if fop == "imageInfo":
            return _json(200, image_info_body(obj))
        if fop.startswith("vframe/"):
            if not re.fullmatch(r"vframe/(jpg|png)/offset/\d+(\.\d+)?(/.*)?", fop):
                raise QiniuError(400, "invalid vframe parameters", with_code=True)
            if not obj.is_video:
                raise QiniuError(400, "not a video file", with_code=True)
            return Response(_load_asset("demo.jpg"), media_type="image/jpeg")
        if fop:
            raise QiniuError(
                400, f"sandbox does not implement the fop {fop.split('/')[0]!r}", with_code=True
            )
        if obj.data is None:
            raise QiniuError(404, "sandbox object has metadata only, no bytes")
        return Response(
            obj.data if request.method == "GET" else b"",
            media_type=obj.mime_type,
            headers={"ETag": f'"{obj.hash}"', "Content-Length": str(obj.fsize)},
        )

    # Outermost, so injected faults carry an X-Reqid too.
    api.add_middleware(ReqIdMiddleware, simulator=sim)
    return api


def create_qiniu_app_from_settings(settings: Settings, **overrides: Any) -> FastAPI:
    """The simulator for the bucket and credentials ``settings`` name."""
    secret = settings.qiniu_secret_key.get_secret_value() if settings.qiniu_secret_key else None
    options: dict[str, Any] = {
        "access_key": settings.qiniu_access_key,
        "secret_key": secret,
        "bucket": settings.qiniu_bucket,
        "private": settings.qiniu_private,
    }
    options.update(overrides)
    missing = [
        f"DISPATCHER_QINIU_{name.upper()}"
        for name in ("access_key", "secret_key", "bucket")
        if not options.get(name)
    ]
    if missing:
        raise ConfigurationError(f"the Qiniu simulator needs {', '.join(missing)}")
    return create_qiniu_app(**options)


def seed_demo_objects(target: FastAPI | QiniuSimulator) -> list[str]:
    """Place the sample files (``demo.mp4``, ``demo.jpg``, ``demo.amr``); returns their keys."""
    sim = target if isinstance(target, QiniuSimulator) else target.state.qiniu
    for key, mime in DEMO_KEYS.items():
        sim.put_bytes(key, _load_asset(key), mime)
    return list(DEMO_KEYS)
