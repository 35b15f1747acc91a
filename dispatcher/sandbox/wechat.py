"""A local WeChat Official Account API: tokens, customer-service and template messages, media.

Paths, parameters and answers are WeChat's (``docs/channels.md``, WeChat section):
every answer is HTTP 200, errors carry ``errcode`` and an ``errmsg`` with
``hint:``/``rid:`` suffixes. The rules live in :class:`WeChatState`; this module
is the HTTP face, the ``/_sandbox/wechat/...`` control routes, and the optional
``TEMPLATESENDJOBFINISH`` receipts pushed to a configured URL, signed as WeChat
signs its pushes. Traffic is recorded (secrets and tokens masked) and faults are
injected by :func:`dispatcher.sandbox.control.install_control`.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.config import Settings
from dispatcher.sandbox.control import LedgerEntry, SandboxState
from dispatcher.sandbox.skeleton import Simulator, record_traffic, require, simulator_app
from dispatcher.sandbox.wechat_state import (
    QUOTA_DEFAULTS,
    TEXT_MAX_BYTES,
    UNICODE_ESCAPE,
    Clock,
    Interaction,
    UserState,
    WeChatError,
    WeChatState,
    check_media,
)

log = logging.getLogger(__name__)

SECRET_QUERY_KEYS = frozenset({"secret", "access_token"})
RECEIPT_ATTEMPTS = 3  # WeChat retries a push that gets no answer, three tries in all
RECEIPT_TIMEOUT = 5.0
CUSTOM_TYPES = frozenset(
    {"text", "image", "voice", "video", "music", "news", "mpnews", "msgmenu", "miniprogrampage"}
)


def signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's push signature: SHA-1 of the token, timestamp and nonce, sorted and joined."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()


def receipt_xml(original_id: str, openid: str, msgid: int, status: str, created: int) -> bytes:
    return (
        "<xml>"
        f"<ToUserName><![CDATA[{original_id}]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
        f"<CreateTime>{created}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType>"
        "<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
        f"<MsgID>{msgid}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status>"
        "</xml>"
    ).encode()


class MaskingState(SandboxState):
    """The ledger, with the app secret and access tokens masked in queries and bodies."""

    def record(self, entry: LedgerEntry) -> None:
        pairs = parse_qsl(entry.query, keep_blank_values=True)
        query = urlencode([(k, "***" if k in SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
        body = entry.json_body
        if isinstance(body, dict) and "secret" in body:
            body = {**body, "secret": "***"}
        super().record(entry.model_copy(update={"query": query, "json_body": body}))


class QuotaChanges(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily: dict[str, int] = Field(default_factory=dict)
    per_minute: dict[str, int | None] = Field(default_factory=dict)


class ReceiptRequest(BaseModel):
    openid: str
    msgid: int
    status: str = "success"


def _json_body(body: bytes) -> dict[str, Any]:
    """A POSTed JSON object, refusing ``\\uXXXX`` escapes as WeChat does (40033)."""
    if not body.strip():
        raise WeChatError(44002)
    if UNICODE_ESCAPE.search(body):
        raise WeChatError(40033)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WeChatError(47001) from None
    if not isinstance(payload, dict):
        raise WeChatError(47001)
    return payload


def _multipart_file(body: bytes, content_type: str, field: str) -> tuple[str, bytes] | None:
    """(filename, bytes) of the file part ``field`` of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1")
    parsed = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not parsed.is_multipart():
        return None
    for part in parsed.iter_parts():
        if part.get_param("name", header="content-disposition") == field:
            payload = part.get_payload(decode=True)
            return part.get_filename() or "", payload if isinstance(payload, bytes) else b""
    return None


def check_custom(payload: Mapping[str, Any], state: WeChatState) -> None:
    """Validate a customer-service message body (not the recipient's window)."""
    kind = payload.get("msgtype")
    if kind not in CUSTOM_TYPES:
        raise WeChatError(40008)
    content = payload.get(kind)
    if not isinstance(content, dict):
        raise WeChatError(47001, f"({kind} must be an object)")
    if kind == "text":
        text = content.get("content")
        if not isinstance(text, str) or not text:
            raise WeChatError(44004)
        if len(text.encode()) > TEXT_MAX_BYTES:
            raise WeChatError(45002)
    elif kind in ("image", "voice"):
        state.check_media_id(content.get("media_id"), kind)
    elif kind == "video":
        state.check_media_id(content.get("media_id"), "video")
        if content.get("thumb_media_id") is not None:
            state.check_media_id(content["thumb_media_id"], "thumb", "image")
        for name in ("title", "description"):
            if name in content and not isinstance(content[name], str):
                raise WeChatError(47001, f"({name} must be a string)")
    elif kind == "news":
        articles = content.get("articles")
        if not isinstance(articles, list) or not articles:
            raise WeChatError(44003)
        if len(articles) > 1:
            raise WeChatError(45008)
        article = articles[0]
        if not isinstance(article, dict) or not all(
            isinstance(article.get(name, ""), str)
            for name in ("title", "description", "url", "picurl")
        ):
            raise WeChatError(47001, "(articles[0] fields must be strings)")


def check_template(payload: Mapping[str, Any], state: WeChatState) -> None:
    """Validate a template message body against the configured templates."""
    template_id = payload.get("template_id")
    if not isinstance(template_id, str) or template_id not in state.templates:
        raise WeChatError(40037)
    data = payload.get("data")
    if not isinstance(data, dict):
        raise WeChatError(47001, "(data must be an object)")
    for key, item in data.items():
        if not isinstance(item, dict) or not isinstance(item.get("value"), str):
            raise WeChatError(47003, f"data.{key}.value invalid")
    for key in state.templates[template_id]:
        if not data.get(key, {}).get("value"):
            raise WeChatError(47003, f"data.{key}.value is empty")
    if "url" in payload and not isinstance(payload["url"], str):
        raise WeChatError(47001, "(url must be a string)")
    mini = payload.get("miniprogram")
    if mini is not None and not (isinstance(mini, dict) and isinstance(mini.get("appid"), str)):
        raise WeChatError(47001, "(miniprogram needs an appid)")
    client_msg_id = payload.get("client_msg_id")
    if client_msg_id is not None and not isinstance(client_msg_id, str):
        raise WeChatError(47001, "(client_msg_id must be a string)")


def create_wechat_app(
    *,
    appid: str,
    secret: str,
    templates: Mapping[str, Iterable[str]] | Iterable[str] = (),
    token_ttl: int = 7200,
    token_overlap: float = 300,
    receipt_url: str | None = None,
    receipt_token: str | None = None,
    original_id: str = "gh_sandbox0000",
    clock: Clock = time.time,
) -> FastAPI:
    """The WeChat simulator as an ASGI app; ``app.state.wechat`` is its :class:`WeChatState`.

    ``templates``: the template ids the account owns, each with the ``data`` keys it
    requires (a plain list of ids requires none). ``receipt_url``/``receipt_token``:
    where template receipts are pushed and the token that signs them (no push when
    unset). ``clock`` drives expiry, windows and quota days; tests pass a fake one.
    """
    known: dict[str, tuple[str, ...]] = (
        {str(k): tuple(str(key) for key in v) for k, v in templates.items()}
        if isinstance(templates, Mapping)
        else {str(t): () for t in templates}
    )
    state = WeChatState(
        appid=appid,
        secret=secret,
        templates=known,
        token_ttl=token_ttl,
        token_overlap=token_overlap,
        clock=clock,
    )
    api = simulator_app(
        "WeChat Official Account simulator",
        version="1",
        errors={WeChatError: _wechat_error},
        routing_error=_routing_error,
    )
    api.state.wechat = state

    pushes: set[asyncio.Task[bool]] = set()

    async def push_receipt(openid: str, msgid: int, status: str) -> bool:
        if not receipt_url or not receipt_token:
            return False
        timestamp, nonce = str(int(state.clock())), str(secrets.randbelow(10**9))
        params = {
            "signature": signature(receipt_token, timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": openid,
        }
        body = receipt_xml(original_id, openid, msgid, status, int(state.clock()))
        async with httpx.AsyncClient(timeout=RECEIPT_TIMEOUT) as client:
            for attempt in range(RECEIPT_ATTEMPTS):
                try:
                    response = await client.post(
                        receipt_url,
                        params=params,
                        content=body,
                        headers={"Content-Type": "text/xml"},
                    )
                    if response.status_code == 200:
                        state.count("receipts_pushed")
                        return True
                except httpx.HTTPError as exc:
                    log.info("template receipt push failed (%s)", type(exc).__name__)
                if attempt + 1 < RECEIPT_ATTEMPTS:
                    await asyncio.sleep(0.2 * (attempt + 1))
        state.count("receipt_failures")
        return False

    @api.get("/cgi-bin/token", tags=["wechat"])
    async def token(request: Request) -> dict[str, Any]:
        state.count("token_calls")
        query = request.query_params
        if query.get("grant_type") != "client_credential":
            raise WeChatError(40002)
        state.check_credentials(query.get("appid"), query.get("secret"))
        state.charge("token")
        access_token, expires_in = state.classic_token()
        return {"access_token": access_token, "expires_in": expires_in}

    @api.post("/cgi-bin/stable_token", tags=["wechat"])
    async def stable_token(request: Request) -> dict[str, Any]:
        state.count("stable_token_calls")
        payload = _json_body(await request.body())
        if payload.get("grant_type") != "client_credential":
            raise WeChatError(40002)
        state.check_credentials(payload.get("appid"), payload.get("secret"))
        force = payload.get("force_refresh", False)
        if not isinstance(force, bool):
            raise WeChatError(47001, "(force_refresh must be a boolean)")
        state.charge("stable_token")
        access_token, expires_in = state.stable_token(force)
        return {"access_token": access_token, "expires_in": expires_in}

    @api.post("/cgi-bin/message/custom/send", tags=["wechat"])
    async def custom_send(request: Request) -> dict[str, Any]:
        state.authenticate(request.query_params.get("access_token"))
        state.charge("custom_send")
        payload = _json_body(await request.body())
        check_custom(payload, state)
        state.take_window(payload.get("touser", ""))
        state.count("custom_sent")
        return {"errcode": 0, "errmsg": "ok"}

    @api.post("/cgi-bin/message/template/send", tags=["wechat"])
    async def template_send(request: Request) -> dict[str, Any]:
        state.authenticate(request.query_params.get("access_token"))
        state.charge("template_send")
        payload = _json_body(await request.body())
        openid = payload.get("touser", "")
        user = state.check_template_user(openid)
        check_template(payload, state)
        msgid, duplicate = state.template_msgid(openid, payload.get("client_msg_id"))
        if not duplicate:
            state.count("template_sent")
            if receipt_url:
                # Not a background task of this response: keep-alive must not wait for it.
                task = asyncio.create_task(push_receipt(openid, msgid, user.receipt_status))
                pushes.add(task)
                task.add_done_callback(pushes.discard)
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    @api.post("/cgi-bin/media/upload", tags=["wechat"])
    async def media_upload(request: Request) -> dict[str, Any]:
        state.authenticate(request.query_params.get("access_token"))
        state.charge("media_upload")
        media_type = request.query_params.get("type", "")
        body = await request.body()
        upload = _multipart_file(body, request.headers.get("content-type", ""), "media")
        if upload is None:
            raise WeChatError(41005)
        check_media(media_type, *upload)
        media = state.store_media(media_type, len(upload[1]))
        state.count("uploads")
        return {"type": media_type, "media_id": media.media_id, "created_at": int(media.created_at)}

    # -- control -------------------------------------------------------------

    @api.get("/_sandbox/wechat/stats", tags=["sandbox"])
    async def stats() -> dict[str, int]:
        return dict(state.stats)

    @api.post("/_sandbox/wechat/revoke-tokens", tags=["sandbox"])
    async def revoke_tokens() -> dict[str, int]:
        return {"revoked": state.revoke_tokens()}

    @api.post("/_sandbox/wechat/expire-tokens", tags=["sandbox"])
    async def expire_tokens() -> dict[str, int]:
        return {"expired": state.expire_tokens()}

    @api.get("/_sandbox/wechat/media", tags=["sandbox"])
    async def media() -> dict[str, dict[str, Any]]:
        return state.media()

    @api.post("/_sandbox/wechat/expire-media", tags=["sandbox"])
    async def expire_media() -> dict[str, int]:
        return {"expired": state.expire_media()}

    @api.get("/_sandbox/wechat/users/{openid}", tags=["sandbox"])
    async def get_user(openid: str) -> UserState:
        return state.user(openid)

    @api.put("/_sandbox/wechat/users/{openid}", tags=["sandbox"], response_model=UserState)
    async def put_user(openid: str, changes: dict[str, Any]) -> Any:
        try:
            return state.set_user(openid, changes)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)

    @api.post("/_sandbox/wechat/users/{openid}/interaction", tags=["sandbox"])
    async def interaction(openid: str, event: Interaction) -> UserState:
        return state.interact(openid, event.trigger)

    @api.get("/_sandbox/wechat/quotas", tags=["sandbox"])
    async def quotas() -> dict[str, dict[str, int]]:
        return state.usage()

    @api.put("/_sandbox/wechat/quotas", tags=["sandbox"])
    async def set_quotas(changes: QuotaChanges) -> Any:
        unknown = (set(changes.daily) | set(changes.per_minute)) - set(QUOTA_DEFAULTS)
        if unknown:
            return JSONResponse({"detail": f"unknown quotas: {sorted(unknown)}"}, 422)
        state.quotas.update(changes.daily)
        state.set_minute_limits(changes.per_minute)
        return state.usage()

    @api.post("/_sandbox/wechat/receipts", tags=["sandbox"])
    async def receipt(event: ReceiptRequest) -> dict[str, bool]:
        return {"pushed": await push_receipt(event.openid, event.msgid, event.status)}

    record_traffic(api, MaskingState())  # last: the ledger and faults wrap every route
    return api


def _wechat_error(request: Request, exc: WeChatError) -> JSONResponse:
    return JSONResponse(exc.body())


def _routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 405:
        return JSONResponse(WeChatError(43002 if request.method == "GET" else 43001).body())
    return JSONResponse({"errcode": -1, "errmsg": "system error"}, status_code=404)


def create_wechat_app_from_settings(settings: Settings, **overrides: Any) -> FastAPI:
    """The simulator of the ``DISPATCHER_WECHAT_*`` app: its templates are the configured
    ones (no data keys required); with a server token, receipts go to the API's endpoint."""
    require(settings, "wechat", ("appid", "secret"), overrides)
    secret = settings.wechat_secret
    token = settings.wechat_server_token
    appid = overrides.get("appid") or settings.wechat_appid
    options: dict[str, Any] = {
        "appid": appid,
        "secret": secret.get_secret_value() if secret is not None else None,
        "templates": sorted(set((settings.wechat_templates or {}).values())),
    }
    if token is not None:
        api = f"http://{settings.api_host}:{settings.api_port}"
        options["receipt_url"] = f"{api}/sender/v1/wechat/{appid}/events"
        options["receipt_token"] = token.get_secret_value()
    options.update(overrides)
    return create_wechat_app(**options)


SIMULATOR = Simulator("WeChat", 9103, create_wechat_app_from_settings, optional=True)
