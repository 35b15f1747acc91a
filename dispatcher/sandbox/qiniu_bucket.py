"""The Qiniu simulator's bucket: objects in memory, the credentials Kodo checks
(upload, management and download tokens), uploads in progress, and the
``?avinfo``/``?imageInfo`` answers about an object (docs/providers.md, "Qiniu")."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import json
import mimetypes
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.sandbox.qiniu_media import (
    AUDIO_FORMATS,
    MP4_FORMAT,
    Track,
    audio_stream,
    gif_frames,
    probe_amr,
    probe_image,
    probe_mp4,
    seconds_text,
    video_stream,
)

Clock = Callable[[], float]

BLOCK_SIZE = 4 * 1024 * 1024
MIN_PART_SIZE = 1024 * 1024
MAX_PARTS = 10_000
UPLOAD_TTL = 7 * 24 * 3600  # how long a multipart upload id or a v1 ctx stays valid
QINIU_DATE_SKEW = 15 * 60  # X-Qiniu-Date accepted this far from our clock
DEMO_KEYS = {"demo.mp4": "video/mp4", "demo.jpg": "image/jpeg", "demo.amr": "audio/amr"}
_EXTRA_TYPES = {".amr": "audio/amr", ".aac": "audio/aac", ".mp3": "audio/mpeg", ".mp4": "video/mp4"}


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
# Signatures (docs/providers.md, "Qiniu")


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
class Multipart:
    bucket: str
    key: str | None
    expires_at: int
    parts: dict[int, tuple[str, bytes]] = field(default_factory=dict)


@dataclass
class Block:
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
        self._multiparts: dict[str, Multipart] = {}
        self._blocks: dict[str, Block] = {}
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
            self._multiparts[upload_id] = Multipart(bucket, key, expires_at)
        return upload_id, expires_at

    def multipart(self, upload_id: str, bucket: str, key: str | None) -> Multipart:
        with self._lock:
            upload = self._multiparts.get(upload_id)
        if upload is None or upload.expires_at < self.clock():
            raise QiniuError(612, "no such uploadId")
        if upload.bucket != bucket or upload.key != key:
            raise QiniuError(400, "uploadId does not match this object")
        return upload

    def add_part(self, upload: Multipart, number: int, data: bytes) -> str:
        etag = qiniu_etag(data)
        with self._lock:
            upload.parts[number] = (etag, data)
        return etag

    def finish_multipart(self, upload_id: str) -> None:
        with self._lock:
            self._multiparts.pop(upload_id, None)

    def make_block(self, size: int, chunk: bytes) -> tuple[str, Block]:
        block = Block(size, bytearray(chunk), int(self.clock()) + UPLOAD_TTL)
        block_id = secrets.token_hex(12)
        with self._lock:
            self._blocks[block_id] = block
        return f"{block_id}.{len(block.data)}", block

    def block(self, ctx: str) -> tuple[str, Block]:
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
# Upload policies: where an upload lands, and what it answers


def upload_key(policy: dict[str, Any], given: str | None, data: bytes, fname: str | None) -> str:
    """The key an upload lands on: given key > saveKey > content hash, within the scope."""
    _, has_key, scope_key = str(policy["scope"]).partition(":")
    if policy.get("forceSaveKey") and policy.get("saveKey"):
        given = None
    if given is None and has_key and not policy.get("isPrefixalScope"):
        given = scope_key
    if given is None and isinstance(policy.get("saveKey"), str):
        given = save_key(policy["saveKey"], data, fname)
    key = given if given is not None else qiniu_etag(data)
    if has_key:
        matches = key.startswith(scope_key) if policy.get("isPrefixalScope") else key == scope_key
        if not matches:
            raise QiniuError(403, "key doesn't match scope")
    if "\x00" in key:
        raise QiniuError(400, "key must not contain null byte")
    return key


def save_key(template: str, data: bytes, fname: str | None) -> str:
    name = fname or ""
    ext = name[name.rfind(".") :] if "." in name else ""
    values = {"etag": qiniu_etag(data), "fname": name, "ext": ext, "fsize": str(len(data))}
    return re.sub(r"\$\((\w+)\)", lambda m: values.get(m.group(1), m.group(0)), template)


def upload_reply(policy: dict[str, Any], obj: StoredObject, fname: str | None) -> Any:
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


# ---------------------------------------------------------------------------
# avinfo / imageInfo answers (their shapes: docs/providers.md, "Qiniu")


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
        video_stream(i, t.duration or duration, t.width, t.height)
        if t.kind == "video"
        else audio_stream(i, t.duration or duration, mime)
        for i, t in enumerate(tracks)
    ]
    name, long_name = AUDIO_FORMATS[mime][:2] if mime in AUDIO_FORMATS else MP4_FORMAT
    bit_rate = int(obj.fsize * 8 / duration) if duration else 0
    return {
        "streams": streams,
        "format": {
            "nb_streams": len(streams),
            "nb_programs": 0,
            "format_name": name,
            "format_long_name": long_name,
            "start_time": "0.000000",
            "duration": seconds_text(duration),
            "size": str(obj.fsize),
            "bit_rate": str(bit_rate),
            "probe_score": 100,
            "tags": {"major_brand": "isom"} if name == MP4_FORMAT[0] else {},
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
