"""Easemob's post-send callbacks and read receipts, taken in (docs/providers.md,
"Callbacks").

Easemob POSTs JSON for every message it handles (``eventType`` ``chat``: the receiver
was online; ``chat_offline``: stored for later) and, with ``chat_type`` ``read_ack``,
when a receiver reads one (``ack_message_id`` names it). Each carries ``security`` =
MD5(``callId`` + callback secret + ``timestamp``), checked here in constant time
together with a window around ``timestamp``; only HTTP 200 counts, and Easemob sends a
failed callback again at once, so a ``callId`` is handled once.

At delivery the channel indexes every Easemob message id it got back (one per target)
to the message's reference, so a callback finds its getMessageId in one lookup. A
receipt goes into the message's history; a read receipt also sets ``readAt`` and
emits ``message.read`` (docs/webhooks.md). A verified callback for an unknown
``msg_id`` is kept in a bounded list and otherwise ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from dispatcher import keys
from dispatcher.api.body import read_body
from dispatcher.connections import REDIS_ERRORS, text
from dispatcher.ids import MessageRef

if TYPE_CHECKING:
    from dispatcher.config import Settings
    from dispatcher.store import StatusStore

log = logging.getLogger(__name__)

CALLBACKS = "/sender/v1/easemob/callbacks"
MAX_CALLBACK_BYTES = 64 * 1024
READ_ACK = "read_ack"
RECEIPTS = frozenset({"chat", "chat_offline"})


class Callback(BaseModel):
    """The fields of an Easemob callback this service reads (others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    callId: str = Field(min_length=1, max_length=200)
    timestamp: int
    security: str = Field(min_length=1, max_length=64)
    eventType: str | None = Field(default=None, max_length=40)
    chat_type: str | None = Field(default=None, max_length=40)
    msg_id: str | None = Field(default=None, max_length=64)
    ack_message_id: str | None = Field(default=None, max_length=64)
    payload: dict[str, Any] | None = None

    @property
    def read_message_id(self) -> str | None:
        """The id a read receipt names (top level, or inside its payload)."""
        if self.ack_message_id:
            return self.ack_message_id
        inner = (self.payload or {}).get("ack_message_id")
        return str(inner) if inner else self.msg_id


def security(call_id: str, secret: str, timestamp: int | str) -> str:
    """Easemob's callback signature: lowercase hex MD5 of callId, secret and timestamp."""
    return hashlib.md5(f"{call_id}{secret}{timestamp}".encode(), usedforsecurity=False).hexdigest()


def verified(callback: Callback, secret: str, *, window_ms: int, now_ms: int) -> bool:
    if abs(now_ms - callback.timestamp) > window_ms:
        return False
    expected = security(callback.callId, secret, callback.timestamp)
    return hmac.compare_digest(expected.encode(), callback.security.lower().encode())


def handle(store: StatusStore, callback: Callback, window_ms: int) -> str:
    """Apply one verified callback; what it came to (for the log and the answer)."""
    if not store.redis.set(keys.easemob_callback(callback.callId), "1", nx=True, px=2 * window_ms):
        return "duplicate"
    try:
        return _apply(store, callback)
    except BaseException:
        store.redis.delete(keys.easemob_callback(callback.callId))  # let Easemob's retry in
        raise


def _apply(store: StatusStore, callback: Callback) -> str:
    is_read = callback.chat_type == READ_ACK or callback.eventType == READ_ACK
    msg_id = callback.read_message_id if is_read else callback.msg_id
    if not is_read and callback.eventType not in RECEIPTS:
        return "ignored"
    member = store.redis.get(keys.easemob_msgid(msg_id)) if msg_id else None
    if member is None:
        entry = {"callId": callback.callId, "msg_id": msg_id, "at": int(time.time() * 1000)}
        entry["kind"] = READ_ACK if is_read else callback.eventType
        pipe = store.redis.pipeline(transaction=False)
        pipe.lpush(keys.EASEMOB_UNKNOWN_CALLBACKS, json.dumps(entry))
        pipe.ltrim(keys.EASEMOB_UNKNOWN_CALLBACKS, 0, keys.MAX_UNKNOWN_CALLBACKS - 1)
        pipe.execute()
        log.info("Easemob callback %s for unknown msg_id %s ignored", callback.callId, msg_id)
        return "unknown"
    ref = MessageRef.parse(text(member))
    if is_read:
        verdict = store.lease.mark_read(ref, callback.timestamp, "Easemob receipt: read")
        log.info("getMessageId=%s read (Easemob msg_id %s): %s", ref.id, msg_id, verdict)
        return f"read:{verdict}"
    state = store.lease.note(ref, f"Easemob receipt: {callback.eventType}")
    log.info("getMessageId=%s Easemob receipt %s", ref.id, callback.eventType)
    return "noted" if state is not None else "missing"


def callback_routes(settings: Settings, store: StatusStore) -> APIRouter:
    """``POST /sender/v1/easemob/callbacks``, when DISPATCHER_EASEMOB_CALLBACK_SECRET is set."""
    router = APIRouter(tags=["easemob"])
    if settings.easemob_callback_secret is None:
        return router
    secret = settings.easemob_callback_secret.get_secret_value()
    window_ms = settings.easemob_callback_window * 1000

    @router.post(CALLBACKS, include_in_schema=False)
    async def callback(request: Request) -> Response:
        try:
            parsed = Callback.model_validate_json(await read_body(request, MAX_CALLBACK_BYTES))
        except ValidationError:
            return JSONResponse({"error": "not an Easemob callback"}, status_code=400)
        if not verified(parsed, secret, window_ms=window_ms, now_ms=int(time.time() * 1000)):
            log.warning("Easemob callback %s refused: bad security or stale", parsed.callId[:64])
            return JSONResponse({"error": "bad security or stale timestamp"}, status_code=403)
        try:
            outcome = await run_in_threadpool(handle, store, parsed, window_ms)
        except REDIS_ERRORS:
            return JSONResponse({"error": "unavailable"}, status_code=503)
        return JSONResponse({"status": outcome})

    return router
