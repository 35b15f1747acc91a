"""Easemob's message recall: ``POST /{org}/{app}/messages/msg_recall``, one message per
call (docs/providers.md, "Easemob", recall). Its answer is read into a
:class:`RecallAnswer`; the window (``DISPATCHER_EASEMOB_RECALL_WINDOW`` is our copy of it)
and the "not enabled" refusal are the app's settings on Easemob's side."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx

from dispatcher.channels.base import RecallAnswer, RecallRequest, RecallVerdict
from dispatcher.channels.easemob.mapping import classify, transport_error
from dispatcher.channels.http import Reply, encode_body, json_or_none
from dispatcher.errors import ConfigurationError, DeliveryError

if TYPE_CHECKING:
    import redis

    from dispatcher.channels.easemob import EasemobChannel
    from dispatcher.channels.easemob.apps import EasemobApp
    from dispatcher.config import Settings

CHAT_TYPES = {"users": "chat", "chatgroups": "groupchat", "chatrooms": "chatroom"}
"""The send's target type and recall's ``chat_type`` for it."""


_REASONS = {
    "exceed recall time limit": RecallVerdict.WINDOW_PASSED,
    "not_found msg": RecallVerdict.NOT_FOUND,
}


def read_answer(status: int, body: Any) -> RecallAnswer:
    """What a recall call's status and JSON body say."""
    recalled = None
    if isinstance(body, dict):
        data = body.get("data")
        if isinstance(data, dict):
            recalled = data.get("recalled")
        msgs = body.get("msgs")
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
            recalled = msgs[0].get("recalled")
    if status == 200 and recalled == "yes":
        return RecallAnswer(RecallVerdict.RECALLED, "recalled")
    if isinstance(recalled, str):
        verdict = _REASONS.get(recalled, RecallVerdict.FAILED)
        return RecallAnswer(verdict, f"Easemob: {recalled}")
    error = classify(status, body, {})
    if status == 403 and "unopened" in error.message:
        return RecallAnswer(RecallVerdict.NOT_ENABLED, error.message)
    return RecallAnswer(RecallVerdict.FAILED, error.message)


def recall_delivered(
    settings: Settings, client: redis.Redis, request: RecallRequest
) -> RecallAnswer:
    """The channel's ``recall``: refused here once our copy of the window has passed,
    else asked of Easemob (a recall is rare: the channel is opened for it)."""
    from dispatcher.channels.easemob import EasemobChannel

    try:
        window = settings.easemob_recall_window
        if time.time() - request.delivered_at.timestamp() > window:
            return RecallAnswer(
                RecallVerdict.WINDOW_PASSED,
                f"delivered more than {window} s ago (DISPATCHER_EASEMOB_RECALL_WINDOW)",
            )
        channel = EasemobChannel(settings, client)
    except ConfigurationError as exc:
        return RecallAnswer(RecallVerdict.FAILED, str(exc))
    try:
        return recall(channel, request)
    except DeliveryError as exc:
        return RecallAnswer(RecallVerdict.FAILED, exc.message)
    finally:
        channel.close()


def recall(channel: EasemobChannel, request: RecallRequest) -> RecallAnswer:
    """Recall one delivered message from its recipient (by its provider message id)."""
    payload = encode_body(
        {
            "msg_id": request.provider_message_id,
            "to": request.to,
            "chat_type": CHAT_TYPES.get(request.target_type, "chat"),
            "from": request.sender,
            "force": False,
        }
    )
    app = channel.app_named(request.app)  # the app that sent it
    url = f"{app.base}/messages/msg_recall"
    token = app.tokens.get()
    response = _post(app, url, payload, token)
    if response.status_code == 401:  # expired or revoked: refresh once (shared) and retry
        app.tokens.invalidate(token)
        response = _post(app, url, payload, app.tokens.get())
    return read_answer(response.status_code, json_or_none(response))


def _post(app: EasemobApp, url: str, payload: bytes, token: str) -> Reply:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        return app.http.post(url, payload, headers)
    except httpx.HTTPError as exc:
        raise transport_error(exc) from None
