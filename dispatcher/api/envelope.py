"""The seed's response envelope, for every answer of the API, and its OpenAPI models.

::

    {"code": 200, "message": "成功", "data": {...}, "page": null,
     "foot": {"operationTime": "2015-11-18 22:19:32", "servicePhone": "400800400",
              "host": "<hostname>"}}

The HTTP status always equals ``code``.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from starlette.responses import Response

from dispatcher.config import Settings
from dispatcher.errors import (
    SERVICE_BUSY,
    ApiError,
    Busy,
    Conflict,
    DispatcherError,
    InvalidMessage,
    MessageTooLarge,
    NotReplicated,
    RateLimited,
    Unavailable,
)
from dispatcher.record import StatusRecord

log = logging.getLogger(__name__)

OK = "成功"
JSON = "application/json"
OPERATION_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

MESSAGES = {
    400: "invalid request: see data.errors for every broken field",
    404: "not found",
    413: "request too large: see data.errors",
    500: "internal error",
    503: "service unavailable: nothing was accepted, retry later",
}
"""Envelope ``message`` of error answers whose detail is in ``data`` or only in the logs."""


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class EnvelopeWriter:
    """Renders envelopes; everything constant is encoded once, the time once per second."""

    def __init__(self, settings: Settings, host: str | None = None) -> None:
        self.zone = ZoneInfo(settings.timezone)
        self.host = host or socket.gethostname()
        self._foot_tail = (
            b',"servicePhone":' + _dumps(settings.service_phone) + b',"host":' + _dumps(self.host)
        )
        self._ok = _dumps(OK)
        self.busy_retry_after = settings.busy_retry_after
        self._second = -1
        self._foot = b""

    def operation_time(self) -> str:
        return datetime.now(self.zone).strftime(OPERATION_TIME_FORMAT)

    def _current_foot(self) -> bytes:
        second = int(time.time())
        if second != self._second:
            stamp = datetime.fromtimestamp(second, self.zone).strftime(OPERATION_TIME_FORMAT)
            self._foot = b'{"operationTime":"' + stamp.encode() + b'"' + self._foot_tail + b"}"
            self._second = second
        return self._foot

    def render(self, code: int, message: str | None = None, data: Any = None) -> bytes:
        encoded = self._ok if message is None else _dumps(message)
        return b'{"code":%d,"message":%b,"data":%b,"page":null,"foot":%b}' % (
            code,
            encoded,
            _dumps(data),
            self._current_foot(),
        )

    def ok(self, data: Any) -> Response:
        return Response(self.render(200, None, data), 200, media_type=JSON)

    def answer(
        self,
        code: int,
        message: str | None = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if message is None and code != 200:
            message = MESSAGES.get(code, "error")
        return Response(self.render(code, message, data), code, headers=headers, media_type=JSON)

    def busy(self) -> Response:
        """503 "service busy" with ``Retry-After``: overload, answered at once (nothing kept)."""
        return self.answer(*self._busy_parts())

    def _busy_parts(self) -> tuple[int, str, Any, Mapping[str, str]]:
        seconds = self.busy_retry_after
        return 503, SERVICE_BUSY, {"retryAfter": seconds}, {"Retry-After": str(seconds)}

    def error(self, exc: DispatcherError) -> Response:
        """The envelope for one of our errors; the HTTP status is the envelope's code."""
        return self.answer(*self.parts(exc))

    def parts(self, exc: DispatcherError) -> tuple[int, str | None, Any, Mapping[str, str] | None]:
        """Code, message (None: the code's default), data and headers answering ``exc``."""
        if isinstance(exc, InvalidMessage):
            code = 413 if isinstance(exc, MessageTooLarge) else 400
            return code, None, {"errors": [e.as_dict() for e in exc.errors]}, None
        if isinstance(exc, RateLimited):
            seconds = max(1, math.ceil(exc.retry_after))
            return 429, exc.message, {"retryAfter": seconds}, {"Retry-After": str(seconds)}
        if isinstance(exc, ApiError):
            return exc.code, exc.message, exc.data, None
        if isinstance(exc, Conflict):
            return 409, str(exc), {"getMessageId": exc.message_id}, None
        if isinstance(exc, Busy):
            log.info("503 busy: %s", exc)
            return self._busy_parts()
        if isinstance(exc, NotReplicated):
            log.warning("503: %s", exc)
            seconds = self.busy_retry_after
            return 503, exc.public, {"retryAfter": seconds}, {"Retry-After": str(seconds)}
        if isinstance(exc, Unavailable):
            # The reason (hosts, ports) is for operators, not callers.
            log.warning("503: %s", exc)
            return 503, exc.public, None, None
        log.error("unexpected %s: %s", type(exc).__name__, exc)
        return 500, None, None, None


# ---------------------------------------------------------------------------
# OpenAPI models: documentation of what ``EnvelopeWriter`` renders.


class Foot(BaseModel):
    operationTime: str = Field(
        pattern=r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$",
        description="server time YYYY-MM-DD HH:MM:SS in the configured time zone",
        examples=["2015-11-18 22:19:32"],
    )
    servicePhone: str = Field(examples=["400800400"])
    host: str = Field(description="host name of the answering server")


class _Envelope(BaseModel):
    code: int = Field(description="equals the HTTP status")
    message: str
    page: None = None
    foot: Foot


class FieldErrorModel(BaseModel):
    field: str = Field(examples=["messageInfo.fileLength"])
    error: str


class ErrorList(BaseModel):
    errors: list[FieldErrorModel]


class RetryAfter(BaseModel):
    retryAfter: int = Field(description="seconds to wait, also in the Retry-After header")


class SubmitData(BaseModel):
    getMessageId: str = Field(examples=["m0a3c1f0e2b9d84f6fa1c0e5b7d2a4c6e8"])


class RecallRefusal(BaseModel):
    reason: str = Field(description="why the recall was refused (docs/api.md, Recall)")
    state: str = Field(description="the message's state, unchanged")
    recipients: list[dict[str, Any]] | None = None


class ErrorResponse(_Envelope):
    data: ErrorList | RetryAfter | SubmitData | RecallRefusal | None = Field(
        default=None,
        description="400/413: every broken field; 429 and a busy 503: the wait; "
        "409: the id in conflict, or (recall) why it cannot be recalled",
    )


class SubmitResponse(_Envelope):
    message: str = Field(examples=[OK])
    data: SubmitData


class BatchRefusal(BaseModel):
    code: int = Field(description="what a single submit of this message would have answered")
    message: str
    errors: list[FieldErrorModel] = Field(
        description="every broken field, named as in a single submit's body"
    )
    retryAfter: int | None = Field(default=None, description="429 only: seconds to wait")


class BatchData(BaseModel):
    results: list[SubmitData | BatchRefusal] = Field(
        description="one entry per message of the request, in its order"
    )


class BatchResponse(_Envelope):
    message: str = Field(examples=[OK])
    data: BatchData


class StatusResponse(_Envelope):
    data: StatusRecord


class StatusListResponse(_Envelope):
    data: list[StatusRecord | None] = Field(
        description="one entry per requested id, same order; null for an unknown id "
        "or a message of another client"
    )


class HealthData(BaseModel):
    status: str = Field(examples=["ok"])


class HealthResponse(_Envelope):
    data: HealthData


class ReadyData(BaseModel):
    redis: str = Field(examples=["ok"], description="'ok' or 'unreachable'")
    broker: str = Field(examples=["ok"], description="'ok' or 'unreachable'")
    warnings: list[str] = Field(
        default_factory=list,
        description="what is unsafe in the Redis configuration (eviction policy, persistence)",
    )


class ReadyResponse(_Envelope):
    data: ReadyData


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for FastAPI: these error codes, in the envelope."""
    descriptions = {
        400: "invalid request; every broken field in data.errors",
        401: "authentication failed, always in the same words: unknown client, channel not "
        "allowed, missing or wrong sign, stale timestamp, or replayed nonce",
        403: "operators only: the client is not an admin; submit: the priority asked for is "
        "above the client's max_priority (nothing was accepted)",
        404: "no such message (or it belongs to another client)",
        409: "submit: getMessageId already used for a different message; recall: the "
        "message cannot be recalled, data.reason says why",
        413: "request body, or the provider message it makes, over the size limit",
        429: "the client's submit rate limit is used up; see Retry-After",
        503: "Redis or the broker is unreachable, or the service is busy (then with "
        "Retry-After); nothing was accepted, retry later with the same getMessageId (with "
        "DISPATCHER_REDIS_MIN_REPLICAS, too few replicas acknowledged: nothing promised)",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}
