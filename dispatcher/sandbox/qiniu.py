"""A local Qiniu Kodo (docs/providers.md, "Qiniu"): upload host, RS host and download domain on one port.

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

import binascii
import functools
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import unquote

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.config import Settings
from dispatcher.sandbox.control import ASGIApp, Message, Receive, Scope, Send
from dispatcher.sandbox.qiniu_bucket import (
    BLOCK_SIZE,
    DEMO_KEYS,
    MAX_PARTS,
    MIN_PART_SIZE,
    Block,
    Multipart,
    ObjectMetadata,
    QiniuError,
    QiniuSimulator,
    avinfo_body,
    b64url,
    b64url_decode,
    canonical_header,
    image_info_body,
    qiniu_etag,
    upload_key,
    upload_reply,
)
from dispatcher.sandbox.qiniu_media import probe_amr, probe_image, probe_mp4
from dispatcher.sandbox.skeleton import Simulator, record_traffic, require, simulator_app

Clock = Callable[[], float]

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
    api = simulator_app(
        "Qiniu Kodo simulator",
        version="0.1.0",
        errors={QiniuError: _qiniu_error, RequestValidationError: _invalid_request},
        routing_error=_routing_error,
    )
    api.state.qiniu = sim

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
        key = upload_key(policy, given, data, fname)
        obj = sim.store_upload(policy, key, data, part_type)
        return _json(200, upload_reply(policy, obj, fname))

    # -- upload host: resumable v2 (what put_file_v2 uses above 8 MiB) ---------

    def _v2_context(
        request: Request, bucket: str, encoded_key: str
    ) -> tuple[dict[str, Any], str | None]:
        policy = sim.check_upload_token(_uptoken(request))  # 631 unless its scope is our bucket
        if bucket != sim.bucket:
            raise QiniuError(631, "no such bucket")
        return policy, _decode_key(encoded_key)

    def _v2_upload(
        request: Request, bucket: str, encoded_key: str, upload_id: str
    ) -> tuple[dict[str, Any], str | None, Multipart]:
        """The upload's policy, key and multipart state (the token checked first)."""
        policy, key = _v2_context(request, bucket, encoded_key)
        return policy, key, sim.multipart(upload_id, bucket, key)

    @api.post("/buckets/{bucket}/objects/{encoded_key}/uploads", tags=["up"])
    async def init_parts(bucket: str, encoded_key: str, request: Request) -> Response:
        policy, key = _v2_context(request, bucket, encoded_key)
        if key is not None:
            upload_key(policy, key, b"", None)  # refuse a key outside the scope now
        upload_id, expires_at = sim.start_multipart(bucket, key)
        return _json(200, {"uploadId": upload_id, "expireAt": expires_at})

    @api.put("/buckets/{bucket}/objects/{encoded_key}/uploads/{upload_id}/{part}", tags=["up"])
    async def upload_part(
        bucket: str, encoded_key: str, upload_id: str, part: str, request: Request
    ) -> Response:
        _, _, upload = _v2_upload(request, bucket, encoded_key, upload_id)
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
        _, _, upload = _v2_upload(request, bucket, encoded_key, upload_id)
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
        _v2_upload(request, bucket, encoded_key, upload_id)
        sim.finish_multipart(upload_id)
        return _json(200, {})

    @api.post("/buckets/{bucket}/objects/{encoded_key}/uploads/{upload_id}", tags=["up"])
    async def complete_parts(
        bucket: str, encoded_key: str, upload_id: str, request: Request
    ) -> Response:
        policy, key, upload = _v2_upload(request, bucket, encoded_key, upload_id)
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
        final_key = upload_key(policy, key, data, fname)
        mime = body.get("mimeType") if isinstance(body.get("mimeType"), str) else None
        obj = sim.store_upload(policy, final_key, data, mime)
        sim.finish_multipart(upload_id)
        return _json(200, upload_reply(policy, obj, fname))

    # -- upload host: resumable v1 -----------------------------------------------

    def _block_reply(request: Request, ctx: str, block: Block, chunk: bytes) -> Response:
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
        key = upload_key(policy, params.get("key"), data, params.get("fname"))
        obj = sim.store_upload(policy, key, data, params.get("mimeType"))
        return _json(200, upload_reply(policy, obj, params.get("fname")))

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

    record_traffic(api)

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


def _qiniu_error(request: Request, exc: QiniuError) -> JSONResponse:
    return _json(exc.status, exc.body())


def _routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    text = "Document not found" if exc.status_code == 404 else str(exc.detail)
    return _json(exc.status_code, {"error": text}, headers=exc.headers)


def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _json(400, {"error": f"invalid argument: {exc}"[:500]})


def create_qiniu_app_from_settings(settings: Settings, **overrides: Any) -> FastAPI:
    """The simulator for the bucket and credentials ``settings`` name."""
    require(settings, "qiniu", ("access_key", "secret_key", "bucket"), overrides)
    secret = settings.qiniu_secret_key.get_secret_value() if settings.qiniu_secret_key else None
    options: dict[str, Any] = {
        "access_key": settings.qiniu_access_key,
        "secret_key": secret,
        "bucket": settings.qiniu_bucket,
        "private": settings.qiniu_private,
    }
    return create_qiniu_app(**{**options, **overrides})


def seed_demo_objects(target: FastAPI | QiniuSimulator) -> list[str]:
    """Place the sample files (``demo.mp4``, ``demo.jpg``, ``demo.amr``); returns their keys."""
    sim = target if isinstance(target, QiniuSimulator) else target.state.qiniu
    for key, mime in DEMO_KEYS.items():
        sim.put_bytes(key, _load_asset(key), mime)
    return list(DEMO_KEYS)


SIMULATOR = Simulator("Qiniu", 9102, create_qiniu_app_from_settings)

__all__ = [
    "SIMULATOR",
    "ObjectMetadata",
    "QiniuError",
    "QiniuSimulator",
    "create_qiniu_app",
    "create_qiniu_app_from_settings",
    "probe_amr",
    "probe_image",
    "probe_mp4",
    "qiniu_etag",
    "seed_demo_objects",
]
