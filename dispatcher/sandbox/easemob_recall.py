"""The simulator's message recall (docs/providers.md, "Easemob", recall): what was sent,
within which window it may be taken back, and the answers when it may not."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.sandbox.easemob_checks import EasemobError, illegal

CHAT_TYPES = {"chat": "users", "groupchat": "chatgroups", "chatroom": "chatrooms"}
"""Recall's ``chat_type`` and the send's target type it stands for."""
UNOPENED = "com.easemob.message.exception.EasemobForbiddenOpException"
WINDOW_PASSED = "exceed recall time limit"
NOT_FOUND = "not_found msg"
WRONG_TARGET = "can't find msg to"


@dataclass(frozen=True)
class Sent:
    target_type: str
    target: str
    at: float


class RecallBook:
    """Every message id the simulator answered a send with, until recalled."""

    def __init__(self, window: float, enabled: bool, clock: Callable[[], float]) -> None:
        self.window = window
        self.enabled = enabled
        self._clock = clock
        self._sent: dict[str, Sent] = {}
        self._lock = threading.Lock()

    def sent(self, message_id: str, target_type: str, target: str) -> None:
        with self._lock:
            self._sent[message_id] = Sent(target_type, target, self._clock())

    def recall(self, payload: dict[str, Any]) -> str:
        """``yes``, or the reason Easemob gives in ``recalled``; raises for a refused call."""
        if not self.enabled:
            raise EasemobError(403, "forbidden_op", "message recall service is unopened", UNOPENED)
        msg_id, to, chat_type = (payload.get(k) for k in ("msg_id", "to", "chat_type"))
        if not isinstance(msg_id, str) or not msg_id:
            raise illegal("msg_id must be provided")
        if not isinstance(to, str) or not to:
            raise illegal("to must be provided")
        if chat_type not in CHAT_TYPES:
            raise illegal("chat_type can only be 'chat' or 'groupchat' or 'chatroom'")
        with self._lock:
            sent = self._sent.get(msg_id)
            if sent is None:
                return NOT_FOUND
            if sent.target != to or sent.target_type != CHAT_TYPES[chat_type]:
                return WRONG_TARGET
            if self._clock() - sent.at > self.window:
                return WINDOW_PASSED
            del self._sent[msg_id]
            return "yes"
