"""WeChat's template receipts: the ``TEMPLATESENDJOBFINISH`` events it pushes to the account.

WeChat POSTs XML to the account's server URL, signed with the account's server
token: ``signature`` = SHA-1 of the sorted and joined token, ``timestamp`` and
``nonce`` query parameters. Each app has its URL
(``/sender/v1/wechat/{appid}/events``); a verified receipt is found by its
``MsgID`` (the index the sender wrote) and recorded in that message's history:
``success``, ``failed:user block`` or ``failed: system failed``. The XML is
parsed with defusedxml: no DTD, no entity expansion. docs/channels.md,
"Template receipts".
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import PlainTextResponse, Response

from dispatcher import keys
from dispatcher.api.body import read_body
from dispatcher.channels.wechat import apps
from dispatcher.connections import text
from dispatcher.ids import MessageRef

if TYPE_CHECKING:
    from dispatcher.config import Settings
    from dispatcher.store import StatusStore

log = logging.getLogger(__name__)

EVENTS = "/sender/v1/wechat/{appid}/events"
TEMPLATE_FINISHED = "TEMPLATESENDJOBFINISH"
MAX_EVENT_BYTES = 16 * 1024  # a receipt is a few hundred bytes
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's push signature: SHA-1 of the token, timestamp and nonce, sorted and joined."""
    return hashlib.sha1("".join(sorted((token, timestamp, nonce))).encode()).hexdigest()


def verified(token: str, params: dict[str, str], *, window: float, now: float) -> bool:
    """The push carries the token's signature (compared in constant time) and a fresh timestamp."""
    timestamp, nonce = params.get("timestamp", ""), params.get("nonce", "")
    given = params.get("signature", "")
    if not timestamp.isdigit() or abs(int(timestamp) - now) > window:
        return False
    return hmac.compare_digest(signature(token, timestamp, nonce).encode(), given.encode())


@dataclass(frozen=True)
class TemplateReceipt:
    openid: str
    msgid: str
    status: str


def parse_event(body: bytes) -> TemplateReceipt | None:
    """The receipt in an event push; None for any other event. ValueError when it is not XML
    we accept (malformed, a DTD or entities)."""
    try:
        root: Element = fromstring(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException) as exc:
        raise ValueError(f"not an acceptable XML event ({type(exc).__name__})") from None
    if root.findtext("Event") != TEMPLATE_FINISHED:
        return None
    msgid, status = root.findtext("MsgID"), root.findtext("Status")
    if not msgid or not msgid.strip().isdigit() or status is None:
        raise ValueError("a TEMPLATESENDJOBFINISH event needs a numeric MsgID and a Status")
    openid = root.findtext("FromUserName") or ""
    return TemplateReceipt(openid, msgid.strip(), _UNPRINTABLE.sub("", status)[:100])


def record_receipt(store: StatusStore, appid: str, receipt: TemplateReceipt) -> MessageRef | None:
    """Note the receipt in its message's history; the message, or None when none is known."""
    index = keys.wechat_template_msgid(appid, receipt.msgid)
    member = store.redis.get(index)
    if member is None:
        return None
    ref = MessageRef.parse(text(member))
    state = store.lease.note(ref, f"WeChat template receipt: {receipt.status}")
    store.redis.delete(index)  # one receipt per msgid: WeChat's repeats find nothing
    return None if state is None else ref


def receipt_routes(settings: Settings, store: StatusStore) -> APIRouter:
    """``GET`` (WeChat's URL check, echoing ``echostr``) and ``POST`` (events) per app."""
    router = APIRouter(tags=["wechat"])
    tokens = {
        appid: app.server_token.get_secret_value()
        for appid, app in apps(settings).items()
        if app.server_token is not None
    }
    window = float(settings.signature_window)

    def check(appid: str, request: Request) -> Response | None:
        token = tokens.get(appid)
        if token is None:
            return PlainTextResponse("unknown app", 404)
        if not verified(token, dict(request.query_params), window=window, now=time.time()):
            log.warning("WeChat push for app %s refused: bad or stale signature", appid)
            return PlainTextResponse("invalid signature", 403)
        return None

    @router.get(EVENTS, include_in_schema=False)
    async def confirm_url(appid: str, request: Request) -> Response:
        refused = check(appid, request)
        return refused or PlainTextResponse(request.query_params.get("echostr", ""))

    @router.post(EVENTS, include_in_schema=False)
    async def event(appid: str, request: Request) -> Response:
        refused = check(appid, request)
        if refused is not None:
            return refused
        try:
            receipt = parse_event(await read_body(request, MAX_EVENT_BYTES))
        except ValueError as exc:
            return PlainTextResponse(str(exc), 400)
        if receipt is not None:
            ref = await run_in_threadpool(record_receipt, store, appid, receipt)
            if ref is None:
                log.info("WeChat receipt for unknown msgid %s of app %s", receipt.msgid, appid)
            else:
                log.info("getMessageId=%s WeChat receipt: %s", ref.id, receipt.status)
        # WeChat retries anything but "success" (or an empty answer).
        return PlainTextResponse("success")

    return router
