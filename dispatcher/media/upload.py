"""Uploads to a Qiniu bucket through the official SDK: form uploads, and resumable
(v2 multipart) ones above its threshold. :class:`~dispatcher.media.qiniu.QiniuClient`
is the :class:`Bucket` its ``upload`` passes."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import qiniu
import qiniu.config
from qiniu.services.storage.uploaders import FormUploader, ResumeUploaderV2

from dispatcher.errors import MediaError
from dispatcher.media.facts import BLOCK_SIZE, guess_mime_type, qiniu_etag, sniff_extension

Progress = Callable[[int, int], None]
"""``progress(uploaded_bytes, total_bytes)``, called as an upload advances."""


class Bucket(Protocol):
    """What an upload needs of the client: where to send, a token, and error mapping."""

    bucket: str
    region: qiniu.Region
    up_scheme: str

    def upload_token(self, key: str | None = None) -> str: ...

    def sdk_error(self, info: Any, *, operation: str, key: str) -> MediaError: ...


def upload(
    client: Bucket,
    data: bytes | str | os.PathLike[str],
    key: str | None = None,
    *,
    progress: Progress | None = None,
    mime_type: str | None = None,
) -> str:
    """Upload bytes or a local file; returns the key.

    The default key is the content's Qiniu etag plus the file's extension
    (from the path, else sniffed from the bytes), uploaded insert-only, so
    uploading the same content twice is harmless. An explicit ``key`` is
    overwritten. Above the SDK's threshold (8 MiB) the upload is resumable
    (v2 multipart, 4 MiB parts, 3 at a time).
    """
    source: bytes | Path = data if isinstance(data, bytes) else Path(data)
    file_name = source.name if isinstance(source, Path) else None
    try:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        if key is None:
            key, scoped_key = _content_key(source), None
        else:
            scoped_key = key
        token = client.upload_token(scoped_key)
        mime = mime_type or guess_mime_type(file_name or key)
        threshold = int(qiniu.config.get_default("default_upload_threshold"))
        if size > threshold:
            ret, info = _resumable(client, token, key, source, size, file_name, mime, progress)
        else:
            ret, info = _form(client, token, key, source, file_name, mime)
            if ret is not None and progress is not None:
                progress(size, size)  # the form uploader reports no progress of its own
    except OSError as exc:
        raise MediaError(
            "media_unreadable", f"cannot read {file_name or 'data'}: {exc}", retryable=False
        ) from None
    if ret is None or not info.ok():
        raise client.sdk_error(info, operation="upload", key=key)
    return str(ret.get("key") or key)


def _content_key(source: bytes | Path) -> str:
    if isinstance(source, bytes):
        return qiniu_etag(source) + sniff_extension(source[:16])
    with source.open("rb") as stream:
        digest = qiniu_etag(stream)
    return digest + (source.suffix.lower() or _sniff_file(source))


def _form(
    client: Bucket,
    token: str,
    key: str,
    source: bytes | Path,
    file_name: str | None,
    mime: str,
) -> tuple[dict[str, Any] | None, Any]:
    uploader = FormUploader(
        client.bucket, regions=[client.region], preferred_scheme=client.up_scheme
    )
    result: tuple[dict[str, Any] | None, Any] = uploader.upload(
        key=key,
        file_name=file_name or key,
        mime_type=mime,
        up_token=token,
        **_sdk_source(source),
    )
    return result


def _resumable(
    client: Bucket,
    token: str,
    key: str,
    source: bytes | Path,
    size: int,
    file_name: str | None,
    mime: str,
    progress: Progress | None,
) -> tuple[dict[str, Any] | None, Any]:
    # Our own pool, shut down after the upload: the SDK's default one is
    # never shut down. No progress recorder: the SDK's default writes
    # resume records to the temp dir, state we do not want on workers.
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="qiniu-part") as pool:
        uploader = ResumeUploaderV2(
            client.bucket,
            regions=[client.region],
            preferred_scheme=client.up_scheme,
            part_size=BLOCK_SIZE,
            progress_handler=progress,
            concurrent_executor=pool,
        )
        result: tuple[dict[str, Any] | None, Any] = uploader.upload(
            key=key,
            data_size=size,
            file_name=file_name or key,
            mime_type=mime,
            up_token=token,
            **_sdk_source(source),
        )
    return result


def _sdk_source(source: bytes | Path) -> dict[str, Any]:
    """The SDK uploaders' argument for a file or for bytes (as a seekable stream)."""
    return {"file_path": str(source)} if isinstance(source, Path) else {"data": BytesIO(source)}


def _sniff_file(path: Path) -> str:
    with path.open("rb") as stream:
        return sniff_extension(stream.read(16))
