"""The Easemob simulator's post-send callbacks and read receipts (docs/providers.md,
"Callbacks"), so the whole loop runs locally.

Off until a URL is configured (``create_easemob_app(callbacks=...)`` or
``PUT /_sandbox/easemob/callbacks``). For every accepted message and target it POSTs a
``chat`` callback (``chat_offline`` for the configured offline users) signed as
Easemob signs them: ``security`` = MD5(callId + secret + timestamp). Like Easemob,
only HTTP 200 counts and a failed callback is sent again once, at once. With
``read_after`` it also sends a ``read_ack`` that many seconds later.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from typing import Any

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, Field


class CallbackRule(BaseModel):
    url: str | None = Field(default=None, description="where callbacks go; None = off")
    secret: str = ""
    enabled: bool = True
    retry_once: bool = Field(default=True, description="send a failed callback again at once")
    offline_users: list[str] = Field(default_factory=list, description="get chat_offline")
    read_after: float | None = Field(
        default=None, ge=0, description="seconds until a read_ack; None = no read receipts"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class CallbackSender:
    """Sends callbacks from background threads; keeps a log of what it sent."""

    def __init__(self, appkey: str, rule: CallbackRule | None = None) -> None:
        self.appkey = appkey
        self.rule = rule or CallbackRule()
        self._lock = threading.Lock()
        self.log: list[dict[str, Any]] = []

    def configure(self, rule: CallbackRule) -> None:
        with self._lock:
            self.rule = rule

    def message_sent(self, sender: str, chat_type: str, ids: dict[str, str]) -> None:
        rule = self.rule
        if not rule.enabled or not rule.url:
            return
        for target, msg_id in ids.items():
            event = "chat_offline" if target in rule.offline_users else "chat"
            body = self._signed(rule, eventType=event, chat_type=chat_type, msg_id=msg_id)
            body.update({"from": sender, "to": target, "payload": {"bodies": []}})
            threading.Thread(target=self._post, args=(rule, body), daemon=True).start()
            if rule.read_after is not None:
                timer = threading.Timer(
                    rule.read_after, self._read_ack, (rule, target, sender, msg_id)
                )
                timer.daemon = True
                timer.start()

    def _read_ack(self, rule: CallbackRule, reader: str, sender: str, msg_id: str) -> None:
        """The receiver read ``msg_id``: signed when sent, so its timestamp is fresh."""
        own_id = str(uuid.uuid4().int >> 65)
        body = self._signed(rule, eventType="chat", chat_type="read_ack", msg_id=own_id)
        body.update({"from": reader, "to": sender, "ack_message_id": msg_id})
        body["payload"] = {"ack_message_id": msg_id}
        self._post(rule, body)

    def _signed(self, rule: CallbackRule, **fields: str) -> dict[str, Any]:
        call_id = f"{self.appkey}_{uuid.uuid4().hex}"
        timestamp = _now_ms()
        security = hashlib.md5(f"{call_id}{rule.secret}{timestamp}".encode(), usedforsecurity=False)
        return {
            "callId": call_id,
            "timestamp": timestamp,
            "appkey": self.appkey,
            "securityVersion": "1.0.0",
            "security": security.hexdigest(),
            **fields,
        }

    def _post(self, rule: CallbackRule, body: dict[str, Any]) -> None:
        tries = 2 if rule.retry_once else 1
        status: int | str = "not sent"
        for _ in range(tries):
            try:
                status = httpx.post(str(rule.url), json=body, timeout=5).status_code
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            if status == 200:
                break
        with self._lock:
            self.log.append({"callId": body["callId"], "chat_type": body.get("chat_type"),
                             "eventType": body.get("eventType"), "msg_id": body.get("msg_id"),
                             "ack_message_id": body.get("ack_message_id"), "status": status})  # fmt: skip


def install_callback_control(api: FastAPI, sender: CallbackSender) -> None:
    """``GET``/``PUT /_sandbox/easemob/callbacks``: the rule, and the log of sent callbacks."""

    @api.put("/_sandbox/easemob/callbacks", tags=["sandbox"])
    async def configure(rule: CallbackRule) -> dict[str, Any]:
        sender.configure(rule)
        return {"configured": True}

    @api.get("/_sandbox/easemob/callbacks", tags=["sandbox"])
    async def sent() -> dict[str, Any]:
        return {"rule": sender.rule.model_dump(exclude={"secret"}), "sent": list(sender.log)}
