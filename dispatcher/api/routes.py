"""The endpoints, one plain function each.

Every signed endpoint takes one dependency, :func:`signed` (or :func:`operator`,
which adds "admin only"): it reads the body and authenticates the request
before anything else about the request is looked at, so its path and query
parameters are validated only for a caller who signed them. Ids become references
through :func:`~dispatcher.api.tenancy.message_ref` alone (docs/security.md). Endpoints raise
:class:`~dispatcher.errors.DispatcherError`; :func:`render_error`, registered
on the app, turns every one into the seed's envelope.

CPU-only steps (signature, JSON, validation) run on the event loop. A submit
then makes one Redis call on the loop's asyncio client (gate, record and queue
in one script); the other endpoints use the blocking clients in one threadpool
hop per request.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, cast

import redis
from fastapi import APIRouter, Depends, Path, Request
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatcher.api.admission import Admission
from dispatcher.api.auth import Authenticator, Caller
from dispatcher.api.body import body_limit, decode_json, decode_submit, read_body
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
    METRICS,
    STATUS,
    STATUS_MANY,
    SUBMIT,
    SUBMIT_BATCH,
)
from dispatcher.api.tenancy import (
    OWNER_PARAM,
    dead_letter_scope,
    message_ref,
    namespace_of,
    requested_owner,
)
from dispatcher.broker_probe import Probe
from dispatcher.config import Settings
from dispatcher.connections import LoopRedis
from dispatcher.errors import (
    AUTHENTICATION_FAILED,
    DispatcherError,
    FieldError,
    Forbidden,
    InvalidMessage,
    NotFound,
    Unauthorized,
    Unavailable,
)
from dispatcher.health import configuration_warnings
from dispatcher.ids import ID_PATTERN
from dispatcher.limits import MAX_STATUS_IDS
from dispatcher.models import field_errors
from dispatcher.producer import Dispatcher

log = logging.getLogger(__name__)

Body = TypeVar("Body", bound=BaseModel)


@dataclass
class Runtime:
    """Everything the endpoints use, built once per app (``app.state.runtime``)."""

    settings: Settings
    dispatcher: Dispatcher
    auth: Authenticator
    admission: Admission
    envelope: EnvelopeWriter
    metrics: ApiMetrics
    async_redis: LoopRedis
    """The asyncio client of the submit path."""
    probes: dict[str, Probe]
    """Short-timeout clients for /readyz: ``redis`` and ``broker`` (may be the same)."""


@dataclass(frozen=True, slots=True)
class SignedCall:
    """A request whose body has been read and whose caller is authenticated."""

    runtime: Runtime
    caller: Caller
    body: bytes
    owner: str | None = None  # another client an admin's request names; None: the caller's own


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
# Dependencies and the error mapping


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


async def signed(request: Request) -> SignedCall:
    """Read the body and authenticate the request (the dependency of every signed endpoint)."""
    rt = runtime(request)
    body = await read_body(request, body_limit(rt.settings, request.url.path))
    # The path exactly as sent (percent-encoding included) is what the client signed.
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else request.url.path
    caller = rt.auth.authenticate(request.method, path, request.query_params.multi_items(), body)
    request.state.caller = caller  # for the error handler's per-client count
    owner = requested_owner(caller, request.query_params.get(OWNER_PARAM))
    return SignedCall(rt, caller, body, owner)


async def operator(call: Annotated[SignedCall, Depends(signed)]) -> SignedCall:
    """:func:`signed`, for admin clients only (403 for the others)."""
    if not call.caller.sees_everything:
        raise Forbidden()
    return call


SignedRequest = Annotated[SignedCall, Depends(signed)]
OperatorRequest = Annotated[SignedCall, Depends(operator)]


async def render_error(request: Request, exc: Exception) -> Response:
    """The envelope for any :class:`DispatcherError` an endpoint or dependency raised."""
    assert isinstance(exc, DispatcherError)
    rt = runtime(request)
    if isinstance(exc, Unauthorized):
        # The caller is told only "authentication failed"; the reason is for operators.
        client = request.query_params.get("client", "")
        path = request.url.path[:200]
        log.info("401 %s %r client=%r: %s", request.method, path, client[:64], exc.reason)
    response = rt.envelope.error(exc)
    # A batch refused whole counts as one refused submit request, as a busy one does.
    if request.url.path in (SUBMIT, SUBMIT_BATCH):
        caller: Caller | None = getattr(request.state, "caller", None)
        rt.metrics.count_submit(response.status_code, caller.client if caller else None, exc)
    return response


def parse_body(model: type[Body], payload: Any) -> Body:
    """A JSON object body as ``model``; InvalidMessage naming every broken field."""
    if not isinstance(payload, dict):
        raise InvalidMessage([FieldError("body", "must be a JSON object")])
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise InvalidMessage(field_errors(exc)) from None


# ---------------------------------------------------------------------------
# Signed endpoints

router = APIRouter()


@router.post(
    SUBMIT,
    response_model=SubmitResponse,
    responses=error_responses(400, 401, 403, 409, 413, 429, 503),
    summary="Submit a message (seed 2.1.4)",
    tags=["messages"],
    openapi_extra={"x-dispatcher-body": "SubmitRequest", "x-dispatcher-signed": True},
)
async def handle_basic_message(call: SignedRequest) -> Response:
    """Validate, record as ``queued`` and queue one message; answers its getMessageId.

    A 200 means the message is durably queued (or was already, for a
    resubmission of the same getMessageId with the same content); any other answer but
    "nothing promised" (docs/deployment.md) means nothing was queued and no record left.
    """
    rt = call.runtime
    if call.owner is not None:
        raise InvalidMessage([FieldError(OWNER_PARAM, "a client submits only its own messages")])
    payload = decode_submit(call.body, rt.settings.max_request_bytes)
    message = rt.dispatcher.validate(payload, client=call.caller.client)
    try:
        submitted = await rt.dispatcher.submit_message_async(
            rt.async_redis.get(),
            message,
            client=call.caller.client,
            gate=rt.admission.gate(call.caller),
            namespace=call.caller.namespace,
        )
    except Unavailable as refusal:
        # Nothing was accepted: give the nonce back so the same bytes may be retried.
        await rt.admission.give_back(call.caller, refusal)
        raise
    rt.metrics.count_submit(200, call.caller.client)
    return rt.envelope.ok({"getMessageId": submitted.message_id})


@router.post(
    STATUS_MANY,
    response_model=StatusListResponse,
    responses=error_responses(400, 401, 413, 503),
    summary="Status of several messages",
    tags=["status"],
    openapi_extra={"x-dispatcher-body": "StatusQuery", "x-dispatcher-signed": True},
)
async def status_many(call: SignedRequest) -> Response:
    """Status records in the order asked, ``null`` for ids none of the caller's has."""
    ids = parse_body(StatusQuery, decode_json(call.body)).getMessageIds
    records = await run_in_threadpool(_lookup, call, ids)
    return call.runtime.envelope.ok(records)


@router.get(
    STATUS,
    response_model=StatusResponse,
    responses=error_responses(400, 401, 404, 413, 503),
    summary="Status of one message",
    tags=["status"],
    openapi_extra={"x-dispatcher-signed": True},
)
async def status_one(
    call: SignedRequest,
    getMessageId: Annotated[
        str, Path(pattern=ID_PATTERN.pattern, description="the id submit answered")
    ],
) -> Response:
    """The status record (docs/api.md) of one of the caller's (or ``owner``'s) messages."""
    [record] = await run_in_threadpool(_lookup, call, [getMessageId])
    if record is None:
        raise NotFound(f"no message {getMessageId} of client {namespace_of(call)}")
    return call.runtime.envelope.ok(record)


def _lookup(call: SignedCall, ids: list[str]) -> list[dict[str, Any] | None]:
    call.runtime.admission.claim(call.caller)
    records = call.runtime.dispatcher.status_many([message_ref(call, i) for i in ids])
    return [None if record is None else record.public() for record in records]


@router.get(
    DEAD_LETTERS,
    responses=error_responses(400, 401, 403, 503),
    summary="List dead letters",
    tags=["operations"],
    openapi_extra={"x-dispatcher-signed": True},
)
async def dead_letters(call: SignedRequest, limit: int = 100, offset: int = 0) -> Response:
    """Dead messages, oldest first, with the error that killed them and their client:
    the caller's own; an admin's, every client's (or ``owner``'s only)."""
    letters = await run_in_threadpool(_dead_letters, call, max(1, min(limit, 1000)), max(0, offset))
    return call.runtime.envelope.ok(letters)


def _dead_letters(call: SignedCall, limit: int, offset: int) -> list[dict[str, Any]]:
    call.runtime.admission.claim(call.caller)
    scope = dead_letter_scope(call)
    letters = call.runtime.dispatcher.dead_letters(limit, offset, namespace=scope)
    return [letter.model_dump(mode="json") for letter in letters]


@router.post(
    DEAD_LETTERS_REPLAY,
    responses=error_responses(400, 401, 403, 503),
    summary="Replay dead letters",
    tags=["operations"],
    openapi_extra={"x-dispatcher-body": "ReplayQuery", "x-dispatcher-signed": True},
)
async def replay_dead_letters(call: SignedRequest) -> Response:
    """Send dead messages round again with their attempts restored: ids of the caller's
    (or ``owner``'s) messages; ``all``, every dead letter :func:`dead_letter_scope` lists."""
    query = parse_body(ReplayQuery, decode_json(call.body))
    result = await run_in_threadpool(_replay, call, query)
    return call.runtime.envelope.ok(result)


def _replay(call: SignedCall, query: ReplayQuery) -> dict[str, Any]:
    dispatcher = call.runtime.dispatcher
    call.runtime.admission.claim(call.caller)
    refs = [message_ref(call, message_id) for message_id in query.getMessageIds]
    if query.all:
        letters = dispatcher.dead_letters(limit=10_000, namespace=dead_letter_scope(call))
        refs += [letter.ref for letter in letters]
    refs = list(dict.fromkeys(refs))
    if not call.caller.sees_everything:  # a client's replays are submits again
        call.runtime.admission.charge(call.caller, len(refs))
    replayed, skipped = [], []
    for ref in refs:
        verdict = dispatcher.replay(ref, by=call.caller.client)
        entry = {"getMessageId": ref.id, "client": ref.namespace}
        if verdict == "ok":
            replayed.append(entry)
        else:
            skipped.append({**entry, "reason": verdict})
    return {"replayed": replayed, "skipped": skipped}


# ---------------------------------------------------------------------------
# Operations


@router.get("/healthz", response_model=HealthResponse, tags=["operations"])
async def healthz(request: Request) -> Response:
    """The process is alive (no dependency checked)."""
    return runtime(request).envelope.ok({"status": "ok"})


@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "Redis or the broker is down"}},
    tags=["operations"],
)
async def readyz(request: Request) -> Response:
    """Redis (status store) and the broker both answer PING."""
    rt = runtime(request)
    states = await run_in_threadpool(_ping_all, rt.probes)
    down = sorted(name for name, state in states.items() if state != "ok")
    if down:
        return rt.envelope.answer(503, f"not ready: {', '.join(down)} unreachable", states)
    store = rt.probes["redis"]  # a client of the status store (a cluster client is typed so)
    warnings = await run_in_threadpool(configuration_warnings, cast(redis.Redis, store))
    return rt.envelope.ok({**states, "warnings": warnings})


def _ping_all(probes: dict[str, Probe]) -> dict[str, str]:
    states: dict[str, str] = {}
    for name, client in probes.items():
        try:
            client.ping()
            states[name] = "ok"
        except (redis.RedisError, OSError):
            states[name] = "unreachable"
    return states


@router.get(
    METRICS,
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: {"description": "DISPATCHER_METRICS_TOKEN is set and the bearer token is not it"},
    },
    tags=["operations"],
)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format: this process's counters and the fleet's, from Redis.

    With ``DISPATCHER_METRICS_TOKEN`` set, only for ``Authorization: Bearer <token>``.
    """
    rt = runtime(request)
    token = rt.settings.metrics_token
    if token is not None:
        given = request.headers.get("authorization", "").encode()
        expected = b"Bearer " + token.get_secret_value().encode()
        if not hmac.compare_digest(given, expected):
            log.info("401 GET %s: missing or wrong bearer token", METRICS)
            return rt.envelope.answer(
                401, AUTHENTICATION_FAILED, headers={"WWW-Authenticate": "Bearer"}
            )
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)
