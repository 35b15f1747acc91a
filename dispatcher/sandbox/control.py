"""What every simulator shares: a request ledger and fault rules under ``/_sandbox/``.

``install_control(app)`` adds the control routes and wraps the app in an ASGI
middleware that records each request (secrets masked) and applies the first
matching fault rule before (or, with ``after_handling``, after) the simulator
answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SECRET_HEADERS = frozenset({"authorization", "share-secret"})
SECRET_JSON_KEYS = frozenset({"client_secret", "password"})
CONTROL_PREFIX = "/_sandbox/"


class FaultRule(BaseModel):
    """One injected fault. Unset match fields match anything."""

    path: str | None = Field(default=None, description="regex searched in the request path")
    method: str | None = None
    body_contains: str | None = Field(default=None, description="substring of the raw body")
    status: int | None = Field(default=None, description="answer with this status instead")
    body: Any = Field(default=None, description="JSON body of the injected answer")
    headers: dict[str, str] = Field(default_factory=dict)
    retry_after: float | None = None
    latency: float = Field(default=0.0, ge=0, description="seconds to wait before answering")
    hang: float | None = Field(
        default=None, ge=0, description="wait this long, then drop the connection unanswered"
    )
    reset: bool = Field(default=False, description="drop the connection without an answer")
    after_handling: bool = Field(
        default=False,
        description="let the simulator act on the request first, then lose its answer",
    )
    times: int | None = Field(
        default=None, ge=1, description="how many matches; None = until cleared"
    )
    skip: int = Field(
        default=0,
        ge=0,
        description="let this many matching requests through first (skip=1: the 2nd call)",
    )

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.method and self.method.upper() != method.upper():
            return False
        if self.path and not re.search(self.path, path):
            return False
        return not (self.body_contains and self.body_contains.encode() not in body)


class FaultRules(BaseModel):
    rules: list[FaultRule]


class LedgerEntry(BaseModel):
    method: str
    path: str
    query: str
    headers: dict[str, str]
    json_body: Any = Field(default=None, alias="json")
    receivedAt: float

    model_config = {"populate_by_name": True}


class SandboxState:
    """The ledger and fault book of one simulator; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ledger: list[LedgerEntry] = []
        self._faults: list[FaultRule] = []

    def record(self, entry: LedgerEntry) -> None:
        with self._lock:
            self._ledger.append(entry)

    def requests(self) -> list[LedgerEntry]:
        with self._lock:
            return list(self._ledger)

    def clear_requests(self) -> None:
        with self._lock:
            self._ledger.clear()

    def set_faults(self, rules: list[FaultRule]) -> None:
        with self._lock:
            self._faults = [rule.model_copy() for rule in rules]

    def add_fault(self, rule: FaultRule) -> None:
        with self._lock:
            self._faults.append(rule.model_copy())

    def faults(self) -> list[FaultRule]:
        with self._lock:
            return [rule.model_copy() for rule in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, method: str, path: str, body: bytes) -> FaultRule | None:
        """The first matching rule done skipping, with one use consumed; every matching
        rule still skipping counts this request (``skip`` counts per rule)."""
        chosen: FaultRule | None = None
        with self._lock:
            for rule in list(self._faults):
                if not rule.matches(method, path, body):
                    continue
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                if chosen is not None:
                    continue
                chosen = rule.model_copy()
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self._faults.remove(rule)
        return chosen


def mask_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    masked: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        if name in SECRET_HEADERS:
            scheme, _, _ = value.partition(" ")
            value = f"{scheme} ***" if scheme and scheme != value else "***"
        masked[name] = value
    return masked


def mask_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: "***" if key in SECRET_JSON_KEYS else mask_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [mask_json(item) for item in value]
    return value


def parse_json(body: bytes) -> Any:
    if not body:
        return None
    try:
        return mask_json(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return None


class ControlMiddleware:
    """Records every non-control request and applies fault rules."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        method, path = scope["method"], scope["path"]
        self.state.record(
            LedgerEntry(
                method=method,
                path=path,
                query=scope.get("query_string", b"").decode("latin-1"),
                headers=mask_headers(scope.get("headers", [])),
                json=parse_json(body),
                receivedAt=time.time(),
            )
        )
        replay = _replay(body, receive)
        rule = self.state.take_fault(method, path, body)
        if rule is None:
            await self.app(scope, replay, send)
            return
        if rule.latency:
            await asyncio.sleep(rule.latency)
        if rule.after_handling:
            await self.app(scope, replay, _discard)
        if rule.hang is not None:
            await asyncio.sleep(rule.hang)
            await _drop_connection(send)
            return
        if rule.reset:
            await _drop_connection(send)
            return
        if rule.status is None:
            if not rule.after_handling:
                await self.app(scope, replay, send)
            else:
                await _drop_connection(send)
            return
        await _send_fault(send, rule)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """Hand the already-read body to the app once, then the server's own events.

    Passing through afterwards lets the app see the client's real disconnect
    instead of a made-up hour-long wait that outlives the connection.
    """
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _discard(message: Message) -> None:
    return None


class ConnectionDropped(Exception):
    """Raised after a partial answer so the server closes the socket mid-response."""


async def _drop_connection(send: Send) -> None:
    # A started response that never completes makes the server close the
    # connection: the client sees the answer lost, as with a reset.
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise ConnectionDropped("sandbox fault: connection dropped")


async def _send_fault(send: Send, rule: FaultRule) -> None:
    payload = json.dumps(rule.body if rule.body is not None else {}).encode()
    headers = [(b"content-type", b"application/json")]
    if rule.retry_after is not None:
        headers.append((b"retry-after", _format_retry_after(rule.retry_after).encode()))
    headers.extend((k.lower().encode(), v.encode()) for k, v in rule.headers.items())
    headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": rule.status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _format_retry_after(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else str(seconds)


def install_control(app: FastAPI, state: SandboxState | None = None) -> SandboxState:
    """Add ``/_sandbox/requests`` and ``/_sandbox/faults`` to ``app`` and record its traffic."""
    state = state or SandboxState()

    @app.get("/_sandbox/requests", tags=["sandbox"])
    def list_requests() -> list[dict[str, Any]]:
        return [entry.model_dump(by_alias=True) for entry in state.requests()]

    @app.delete("/_sandbox/requests", tags=["sandbox"])
    def clear_requests() -> dict[str, bool]:
        state.clear_requests()
        return {"ok": True}

    @app.get("/_sandbox/faults", tags=["sandbox"])
    def list_faults() -> list[FaultRule]:
        return state.faults()

    @app.post("/_sandbox/faults", tags=["sandbox"])
    def set_faults(rules: FaultRules | FaultRule) -> list[FaultRule]:
        for rule in rules.rules if isinstance(rules, FaultRules) else [rules]:
            state.add_fault(rule)
        return state.faults()

    @app.delete("/_sandbox/faults", tags=["sandbox"])
    def clear_faults() -> dict[str, bool]:
        state.clear_faults()
        return {"ok": True}

    app.add_middleware(ControlMiddleware, state=state)
    return state
