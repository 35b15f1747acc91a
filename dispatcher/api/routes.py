"""The endpoints. Each reads top to bottom: body -> caller -> input -> Redis -> envelope.

CPU-only steps (signature, JSON, validation) run on the event loop. A submit
then makes one Redis call on the loop's asyncio client (gate, record and queue
in one script); the other endpoints use the blocking clients in one threadpool
hop per request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Path, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatcher.api.admission import Admission
from dispatcher.api.auth import Authenticator, Caller
from dispatcher.api.envelope import (
    EnvelopeWriter,
    HealthResponse,
    ReadyResponse,
    StatusListResponse,
    StatusResponse,
    SubmitResponse,
    error_responses,
)
from dispatcher.api.metrics import ApiMetrics
from dispatcher.api.paths import (
    DEAD_LETTERS,
    DEAD_LETTERS_REPLAY,
    MAX_STATUS_IDS,
    STATUS,
    STATUS_MANY,
    SUBMIT,
)
from dispatcher.config import Settings
from dispatcher.connections import LoopRedis
from dispatcher.errors import (
    DispatcherError,
    FieldError,
    Forbidden,
    InvalidMessage,
    MessageTooLarge,
    NotFound,
    Unavailable,
)
from dispatcher.ids import ID_PATTERN
from dispatcher.models import Message, field_errors
from dispatcher.producer import Dispatcher, Submitted

# A \uD800-\uDFFF escape may leave a lone surrogate that no UTF-8 writer accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


@dataclass
class Runtime:
    """Everything the endpoints use, built once per app."""

    settings: Settings
    dispatcher: Dispatcher
    auth: Authenticator
    admission: Admission
    envelope: EnvelopeWriter
    metrics: ApiMetrics
    async_redis: LoopRedis
    """The asyncio client of the submit path."""
    probes: dict[str, redis.Redis]
    """Short-timeout clients for /readyz: ``redis`` and ``broker`` (may be the same)."""


class StatusQuery(BaseModel):
    """Body of ``POST /sender/v1/messages/status``."""

    model_config = ConfigDict(extra="forbid")

    getMessageIds: list[Annotated[str, Field(pattern=ID_PATTERN.pattern)]] = Field(
        max_length=MAX_STATUS_IDS, description=f"at most {MAX_STATUS_IDS} ids"
    )


class ReplayQuery(BaseModel):
    """Body of ``POST /sender/v1/dead-letters/replay``."""

    model_config = ConfigDict(extra="forbid")

    getMessageIds: list[Annotated[str, Field(pattern=ID_PATTERN.pattern)]] = Field(
        default_factory=list, max_length=MAX_STATUS_IDS, description=f"at most {MAX_STATUS_IDS} ids"
    )
    all: bool = Field(default=False, description="replay every dead letter (up to 10,000)")


# ---------------------------------------------------------------------------
# Input


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> MessageTooLarge:
    return MessageTooLarge([FieldError("body", f"is larger than the limit of {limit} bytes")])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(body: bytes) -> Any:
    """Strict UTF-8, strict JSON (no NaN/Infinity), no lone surrogates."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            [FieldError("body", f"is not valid UTF-8 (byte {exc.start}: {exc.reason})")]
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidMessage([FieldError("body", "is nested too deeply")]) from None
    except ValueError as exc:
        raise InvalidMessage([FieldError("body", f"is not valid JSON ({exc})")]) from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMessage(
                [
                    FieldError(
                        "body", "contains an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)"
                    )
                ]
            ) from None
    return value


def parse_status_query(payload: Any) -> list[str]:
    if not isinstance(payload, dict):
        raise InvalidMessage([FieldError("body", "must be a JSON object")])
    try:
        return StatusQuery.model_validate(payload).getMessageIds
    except ValidationError as exc:
        raise InvalidMessage(field_errors(exc)) from None


# ---------------------------------------------------------------------------
# Endpoints


def build_router(rt: Runtime) -> APIRouter:
    router = APIRouter()
    settings, dispatcher, auth, admission = rt.settings, rt.dispatcher, rt.auth, rt.admission
    envelope, metrics = rt.envelope, rt.metrics
    limit = settings.max_request_bytes

    def validate(payload: Any) -> Message:
        try:
            return dispatcher.validate(payload)
        except RecursionError:
            raise InvalidMessage([FieldError("body", "is nested too deeply")]) from None

    async def accept(caller: Caller, message: Message) -> Submitted:
        try:
            return await dispatcher.submit_message_async(
                rt.async_redis.get(), message, client=caller.client, gate=admission.gate(caller)
            )
        except Unavailable:
            # Nothing was accepted: give the sign back so the same bytes may be retried.
            await run_in_threadpool(admission.release, caller)
            raise

    @router.post(
        SUBMIT,
        response_model=SubmitResponse,
        responses=error_responses(400, 401, 409, 413, 429, 503),
        summary="Submit a message (seed 2.1.4)",
        tags=["messages"],
        openapi_extra={"x-dispatcher-body": "SubmitRequest", "x-dispatcher-signed": True},
    )
    async def handle_basic_message(request: Request) -> Response:
        """Validate, record as ``queued`` and queue one message; answers its getMessageId.

        A 200 means the message is durably queued (or was already, for a
        resubmission of the same getMessageId with the same content); any
        other answer means nothing was queued and no status record was left.
        """
        metrics.submitted.inc()
        try:
            body = await read_body(request, limit)
            caller = auth.authenticate(request.query_params.multi_items(), body)
            message = validate(decode_json(body))
            submitted = await accept(caller, message)
        except DispatcherError as exc:
            response = envelope.error(exc)
            metrics.reject(response.status_code)
            return response
        metrics.accepted.inc()
        return envelope.ok({"getMessageId": submitted.message_id})

    def lookup(caller: Caller, ids: list[str]) -> list[dict[str, Any] | None]:
        admission.claim(caller)
        records = dispatcher.status_many(ids)
        return [
            record.public() if record is not None and caller.can_see(record.client) else None
            for record in records
        ]

    @router.post(
        STATUS_MANY,
        response_model=StatusListResponse,
        responses=error_responses(400, 401, 413, 503),
        summary="Status of several messages",
        tags=["status"],
        openapi_extra={"x-dispatcher-body": "StatusQuery", "x-dispatcher-signed": True},
    )
    async def status_many(request: Request) -> Response:
        """Status records in the order asked, ``null`` for unknown ids and other clients' ids."""
        try:
            body = await read_body(request, limit)
            caller = auth.authenticate(request.query_params.multi_items(), body)
            ids = parse_status_query(decode_json(body))
            records = await run_in_threadpool(lookup, caller, ids)
        except DispatcherError as exc:
            return envelope.error(exc)
        return envelope.ok(records)

    @router.get(
        STATUS,
        response_model=StatusResponse,
        responses=error_responses(400, 401, 404, 413, 503),
        summary="Status of one message",
        tags=["status"],
        openapi_extra={"x-dispatcher-signed": True},
    )
    async def status_one(
        request: Request,
        getMessageId: Annotated[
            str, Path(pattern=ID_PATTERN.pattern, description="the id submit answered")
        ],
    ) -> Response:
        """The status record (SPEC §7) of one of the caller's messages."""
        try:
            body = await read_body(request, limit)
            caller = auth.authenticate(request.query_params.multi_items(), body)
            [record] = await run_in_threadpool(lookup, caller, [getMessageId])
            if record is None:
                raise NotFound(f"no message {getMessageId} for this client")
        except DispatcherError as exc:
            return envelope.error(exc)
        return envelope.ok(record)

    def operator(request: Request, body: bytes) -> Caller:
        caller = auth.authenticate(request.query_params.multi_items(), body)
        if not caller.sees_everything:
            raise Forbidden()
        return caller

    @router.get(
        DEAD_LETTERS,
        responses=error_responses(400, 401, 403, 503),
        summary="List dead letters (operators)",
        tags=["operations"],
        openapi_extra={"x-dispatcher-signed": True},
    )
    async def dead_letters(request: Request, limit: int = 100, offset: int = 0) -> Response:
        """Dead messages, oldest first, with the error that killed them. Admin clients only."""
        try:
            body = await read_body(request, limit=settings.max_request_bytes)
            operator(request, body)
            letters = await run_in_threadpool(
                dispatcher.dead_letters, max(1, min(limit, 1000)), max(0, offset)
            )
        except DispatcherError as exc:
            return envelope.error(exc)
        return envelope.ok([letter.model_dump(mode="json") for letter in letters])

    def replay(query: ReplayQuery) -> dict[str, Any]:
        ids = list(query.getMessageIds)
        if query.all:
            ids += [letter.getMessageId for letter in dispatcher.dead_letters(limit=10_000)]
        replayed, skipped = [], []
        for message_id in dict.fromkeys(ids):
            verdict = dispatcher.replay(message_id)
            if verdict == "ok":
                replayed.append(message_id)
            else:
                skipped.append({"getMessageId": message_id, "reason": verdict})
        return {"replayed": replayed, "skipped": skipped}

    @router.post(
        DEAD_LETTERS_REPLAY,
        responses=error_responses(400, 401, 403, 503),
        summary="Replay dead letters (operators)",
        tags=["operations"],
        openapi_extra={"x-dispatcher-body": "ReplayQuery", "x-dispatcher-signed": True},
    )
    async def replay_dead_letters(request: Request) -> Response:
        """Send dead messages round again with their attempts restored. Admin clients only."""
        try:
            body = await read_body(request, limit)
            operator(request, body)
            try:
                query = ReplayQuery.model_validate(decode_json(body))
            except ValidationError as exc:
                raise InvalidMessage(field_errors(exc)) from None
            result = await run_in_threadpool(replay, query)
        except DispatcherError as exc:
            return envelope.error(exc)
        return envelope.ok(result)

    @router.get("/healthz", response_model=HealthResponse, tags=["operations"])
    async def healthz() -> Response:
        """The process is alive (no dependency checked)."""
        return envelope.ok({"status": "ok"})

    def ping_all() -> dict[str, str]:
        states: dict[str, str] = {}
        for name, client in rt.probes.items():
            try:
                client.ping()
                states[name] = "ok"
            except (redis.RedisError, OSError):
                states[name] = "unreachable"
        return states

    @router.get(
        "/readyz",
        response_model=ReadyResponse,
        responses={503: {"model": ReadyResponse, "description": "Redis or the broker is down"}},
        tags=["operations"],
    )
    async def readyz() -> Response:
        """Redis (status store) and the broker both answer PING."""
        states = await run_in_threadpool(ping_all)
        down = sorted(name for name, state in states.items() if state != "ok")
        if down:
            return envelope.answer(503, f"not ready: {', '.join(down)} unreachable", states)
        return envelope.ok(states)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
        tags=["operations"],
    )
    def prometheus_metrics() -> Response:
        """Prometheus text format: this process's counters and the fleet's, from Redis."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return router
