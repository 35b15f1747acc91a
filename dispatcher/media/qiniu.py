"""Qiniu Kodo: what the worker and the producer need from the bucket (docs/providers.md, "Qiniu").

The official ``qiniu`` SDK does the signing (upload tokens, QBox/Qiniu management
tokens, private download URLs), the form and resumable uploads and ``stat``.
``?avinfo`` and ``?imageInfo`` are plain GETs on the download domain, done with
one ``httpx.Client`` per :class:`QiniuClient`.

Every failure is a :class:`~dispatcher.errors.MediaError` whose ``retryable``
tells the delivery loop whether another attempt can help; messages name the
operation, the key and the bucket, never a credential or a signed URL.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Self
from urllib.parse import quote, urlsplit

import httpx
import qiniu
import qiniu.config

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError, MediaError
from dispatcher.media.facts import (
    BLOCK_SIZE,
    AvInfo,
    ImageMeta,
    ObjectStat,
    as_int,
    guess_mime_type,
    parse_avinfo,
    parse_image_info,
    qiniu_etag,
    sniff_extension,
)
from dispatcher.media.upload import Progress, upload

# Qiniu answers a few permanent conditions with 5xx/6xx codes; these are the
# ones another attempt can fix (the SDK's own need_retry() table agrees).
_RETRYABLE_STATUSES = frozenset({406, 429, 573, 599, 608, 701})
_PERMANENT_5XX = frozenset({501, 579})
_MAX_DETAIL = 200


class QiniuClient:
    """One bucket on Qiniu: stat, media info, download URLs and uploads.

    Thread-safe for the SDK calls; the ``httpx.Client`` is shared by the
    threads using this object (give each worker thread its own client when
    throughput matters; docs/architecture.md, "Costs").

    SDK calls use the SDK's own timeout and connection retries (30 s, 3
    retries): both are process-wide ``qiniu.config`` defaults, which we leave
    alone rather than change for every other user of the SDK in the process.
    """

    def __init__(
        self,
        *,
        access_key: str,
        secret_key: str,
        bucket: str,
        domain: str,
        private: bool = False,
        url_lifetime: int = 3600,
        up_host: str = "https://up.qiniup.com",
        rs_host: str = "https://rs.qiniu.com",
        timeout: float = 10.0,
    ) -> None:
        self.bucket = bucket
        self.domain = domain.rstrip("/") if "://" in domain else f"http://{domain.rstrip('/')}"
        self.private = private
        self.url_lifetime = url_lifetime
        self.up_host = up_host.rstrip("/")
        self.rs_host = rs_host.rstrip("/")
        self.timeout = timeout
        self._auth = qiniu.Auth(access_key, secret_key)
        # Fixed hosts passed per call: no UC region query, and no set_default()
        # that would redirect every other SDK user in the process.
        self.region = qiniu.Region(up_host=self.up_host, rs_host=self.rs_host)
        # The SDK overrides each host's scheme with a "preferred" one (http by
        # default); keep the scheme each configured host asks for.
        self.up_scheme = urlsplit(self.up_host).scheme or "https"
        self._bucket_manager = qiniu.BucketManager(
            self._auth,
            regions=[self.region],
            preferred_scheme=urlsplit(self.rs_host).scheme or "https",
        )
        self._http = httpx.Client(timeout=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> QiniuClient:
        """The client ``DISPATCHER_QINIU_*`` describe; raises ConfigurationError naming what is missing."""
        secret = settings.qiniu_secret_key.get_secret_value() if settings.qiniu_secret_key else None
        required = {
            "DISPATCHER_QINIU_ACCESS_KEY": settings.qiniu_access_key,
            "DISPATCHER_QINIU_SECRET_KEY": secret,
            "DISPATCHER_QINIU_BUCKET": settings.qiniu_bucket,
            "DISPATCHER_QINIU_DOMAIN": settings.qiniu_domain,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise ConfigurationError(f"Qiniu is not configured: set {', '.join(missing)}")
        assert settings.qiniu_access_key and secret and settings.qiniu_bucket
        assert settings.qiniu_domain
        return cls(
            access_key=settings.qiniu_access_key,
            secret_key=secret,
            bucket=settings.qiniu_bucket,
            domain=settings.qiniu_domain,
            private=settings.qiniu_private,
            url_lifetime=settings.qiniu_url_lifetime,
            up_host=settings.qiniu_up_host,
            rs_host=settings.qiniu_rs_host,
            timeout=settings.qiniu_timeout,
        )

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- signing (pure) --------------------------------------------------------

    def download_url(
        self, key: str, query: str | None = None, *, deadline: int | None = None
    ) -> str:
        """The URL of ``key`` on the download domain, ``?query`` appended, signed if private.

        The key is UTF-8 and URL-escaped before signing (docs/providers.md, "Qiniu").
        ``deadline`` (unix seconds) defaults to now + ``url_lifetime``.
        """
        url = f"{self.domain}/{quote(key, safe='/')}"
        if query:
            url = f"{url}?{query}"
        if not self.private:
            return url
        if deadline is None:
            deadline = int(time.time()) + self.url_lifetime
        url = f"{url}{'&' if '?' in url else '?'}e={deadline}"
        return f"{url}&token={self._auth.token(url)}"

    def upload_token(
        self,
        key: str | None = None,
        *,
        expires: int = 3600,
        deadline: int | None = None,
        policy: dict[str, Any] | None = None,
    ) -> str:
        """An upload token for ``key`` (overwrite allowed) or the bucket (insert-only).

        Serialised as the SDK does (scope, deadline, then ``policy``, compact
        JSON) but with an explicit ``deadline`` when one is given.
        """
        scope = self.bucket if key is None else f"{self.bucket}:{key}"
        put_policy: dict[str, Any] = {
            "scope": scope,
            "deadline": deadline if deadline is not None else int(time.time()) + expires,
        }
        put_policy.update(policy or {})
        return str(self._auth.token_with_data(json.dumps(put_policy, separators=(",", ":"))))

    # -- metadata --------------------------------------------------------------

    def stat(self, key: str) -> ObjectStat:
        """Size, type, hash and put time of ``key`` (RS ``stat``)."""
        ret, info = self._bucket_manager.stat(self.bucket, key)
        if ret is None or not info.ok():
            raise self.sdk_error(info, operation="stat", key=key)
        try:
            return ObjectStat(
                fsize=int(ret["fsize"]),
                mime_type=str(ret.get("mimeType") or ""),
                hash=str(ret.get("hash") or ""),
                put_time=int(ret.get("putTime") or 0),
            )
        except (KeyError, TypeError, ValueError):
            raise MediaError(
                "qiniu_bad_response",
                f"stat of key {key!r} in bucket {self.bucket!r}: the answer has no usable fsize",
                retryable=True,
                status=info.status_code,
            ) from None

    def avinfo(self, key: str) -> AvInfo:
        """Duration, video size and file size of ``key`` (``?avinfo``)."""
        return parse_avinfo(self._fop(key, "avinfo"))

    def image_info(self, key: str) -> ImageMeta:
        """Width, height, size and format of the image ``key`` (``?imageInfo``)."""
        body = self._fop(key, "imageInfo")
        meta = parse_image_info(body)
        if meta is None:
            raise MediaError(
                "media_unreadable",
                f"imageInfo of key {key!r} in bucket {self.bucket!r} gave no width and height",
                retryable=False,
            )
        return meta

    def _fop(self, key: str, fop: str) -> dict[str, Any]:
        url = self.download_url(key, fop)
        try:
            response = self._http.get(url)
        except httpx.TimeoutException:
            raise MediaError(
                "qiniu_timeout",
                f"{fop} of key {key!r}: no answer from {self.domain} within {self.timeout} s",
                retryable=True,
                ambiguous=False,  # a read: nothing changed on Qiniu either way
            ) from None
        except httpx.TransportError as exc:
            # The exception text can carry the signed URL: report its type only.
            raise MediaError(
                "qiniu_unavailable",
                f"{fop} of key {key!r}: {self.domain} unreachable ({type(exc).__name__})",
                retryable=True,
            ) from None
        body = _json_or_none(response.content)
        # avinfo/imageInfo errors are {"code": int, "error": str}, usually with the same status.
        if response.status_code != 200 or (isinstance(body, dict) and "error" in body):
            status = response.status_code
            if status == 200 and isinstance(body, dict):
                status = as_int(body.get("code")) or 400
            raise self._error(status, _detail(response.content), operation=fop, key=key)
        if not isinstance(body, dict):
            raise MediaError(
                "qiniu_bad_response",
                f"{fop} of key {key!r}: the answer from {self.domain} is not a JSON object",
                retryable=True,
                status=response.status_code,
            )
        return body

    # -- upload ----------------------------------------------------------------

    def upload(
        self,
        data: bytes | str | os.PathLike[str],
        key: str | None = None,
        *,
        progress: Progress | None = None,
        mime_type: str | None = None,
    ) -> str:
        """Upload bytes or a local file; returns the key (see :func:`upload`)."""
        return upload(self, data, key, progress=progress, mime_type=mime_type)

    # -- errors ----------------------------------------------------------------

    def sdk_error(self, info: Any, *, operation: str, key: str) -> MediaError:
        status = int(getattr(info, "status_code", -1))
        exception = getattr(info, "exception", None)
        if status < 0 or exception is not None:
            # requests' texts include URLs; the type says enough.
            name = type(exception).__name__ if exception is not None else "unknown error"
            timed_out = "Timeout" in name
            return MediaError(
                "qiniu_timeout" if timed_out else "qiniu_unavailable",
                f"{operation} of key {key!r}: Qiniu unreachable ({name})",
                retryable=True,
                ambiguous=timed_out and operation == "upload",
            )
        if status == 200:
            # 200 without X-Reqid (the SDK's "server is not qiniu"): a wrong host.
            return MediaError(
                "qiniu_bad_response",
                f"{operation} of key {key!r}: the host answered 200 but is not Qiniu "
                "(no X-Reqid); check DISPATCHER_QINIU_UP_HOST / DISPATCHER_QINIU_RS_HOST",
                retryable=False,
                status=status,
            )
        return self._error(status, _detail(getattr(info, "text_body", "") or ""), operation, key)

    def _error(self, status: int, detail: str, operation: str, key: str) -> MediaError:
        where = f"key {key!r} in bucket {self.bucket!r}"
        said = f"Qiniu {status}: {detail}" if detail else f"Qiniu {status}"
        if status in (404, 612):
            return MediaError(
                "media_not_found",
                f"{operation}: key {key!r} not found in bucket {self.bucket!r} ({said})",
                retryable=False,
                status=status,
            )
        if status == 631:
            return MediaError(
                "bucket_not_found",
                f"{operation} of key {key!r}: bucket {self.bucket!r} does not exist ({said}); "
                "check DISPATCHER_QINIU_BUCKET",
                retryable=False,
                status=status,
            )
        if status == 401:
            return MediaError(
                "qiniu_unauthorized",
                f"{operation} of {where}: Qiniu refused our credentials ({said}); check "
                "DISPATCHER_QINIU_ACCESS_KEY and DISPATCHER_QINIU_SECRET_KEY",
                retryable=False,
                status=status,
            )
        if status == 403:
            return MediaError(
                "qiniu_forbidden", f"{operation} of {where}: {said}", retryable=False, status=status
            )
        if status == 413:
            return MediaError(
                "media_too_large", f"{operation} of {where}: {said}", retryable=False, status=status
            )
        if status == 614:
            return MediaError(
                "media_exists",
                f"{operation}: {where} already exists with other content ({said})",
                retryable=False,
                status=status,
            )
        if status == 400 and operation in ("avinfo", "imageInfo"):
            return MediaError(
                "media_unreadable",
                f"{operation} of {where}: Qiniu cannot read the file as media ({said})",
                retryable=False,
                status=status,
            )
        retryable = status in _RETRYABLE_STATUSES or (
            500 <= status < 600 and status not in _PERMANENT_5XX
        )
        return MediaError(
            "qiniu_unavailable" if retryable else "qiniu_error",
            f"{operation} of {where}: {said}",
            retryable=retryable,
            status=status,
        )


def _json_or_none(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _detail(content: bytes | str) -> str:
    """Qiniu's ``error`` text, else the start of the body; never more than a short line."""
    raw = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
    body = _json_or_none(raw.encode()) if raw else None
    text = body.get("error") if isinstance(body, dict) else None
    text = str(text) if text is not None else raw.strip()
    return text[:_MAX_DETAIL]


__all__ = [
    "BLOCK_SIZE",
    "AvInfo",
    "ImageMeta",
    "ObjectStat",
    "Progress",
    "QiniuClient",
    "guess_mime_type",
    "parse_avinfo",
    "parse_image_info",
    "qiniu_etag",
    "sniff_extension",
]
