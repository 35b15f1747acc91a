"""Operators' webhook endpoints (docs/webhooks.md, "Operators"): admin clients only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatcher.api.envelope import error_responses
from dispatcher.api.routes import OperatorRequest, SignedCall
from dispatcher.errors import NotFound
from dispatcher.webhooks import admin
from dispatcher.webhooks.outbox import WebhookStore

ENDPOINTS = "/sender/v1/webhooks/endpoints"
ENABLE = "/sender/v1/webhooks/endpoints/{endpointId}/enable"
DEAD_LETTERS = "/sender/v1/webhooks/dead-letters"
REPLAY = "/sender/v1/webhooks/dead-letters/replay"
_SIGNED = {"x-dispatcher-signed": True}

router = APIRouter(tags=["webhooks"])


def _store(call: SignedCall) -> WebhookStore:
    call.runtime.admission.claim(call.caller)
    return WebhookStore(call.runtime.dispatcher.redis)


@router.get(
    ENDPOINTS,
    responses=error_responses(400, 401, 403, 503),
    summary="Webhook endpoints and their health",
    openapi_extra=_SIGNED,
)
async def list_endpoints(call: OperatorRequest) -> Response:
    """Every configured endpoint (no secrets): counts, last error, disabled and why."""
    views = await run_in_threadpool(lambda: admin.endpoints(call.runtime.settings, _store(call)))
    return call.runtime.envelope.ok(views)


@router.post(
    ENABLE,
    responses=error_responses(400, 401, 403, 404, 503),
    summary="Enable a disabled webhook endpoint",
    openapi_extra=_SIGNED,
)
async def enable_endpoint(
    call: OperatorRequest, endpoint_id: Annotated[str, Path(alias="endpointId", max_length=64)]
) -> Response:
    """Clear the disabled mark and the failure streak; replay its dead letters after."""
    if endpoint_id not in call.runtime.settings.webhook_subscriptions().endpoints:
        raise NotFound("no such webhook endpoint")
    was_disabled = await run_in_threadpool(lambda: _store(call).enable(endpoint_id))
    return call.runtime.envelope.ok({"id": endpoint_id, "wasDisabled": was_disabled})


@router.get(
    DEAD_LETTERS,
    responses=error_responses(400, 401, 403, 503),
    summary="Webhook deliveries whose attempts ran out",
    openapi_extra=_SIGNED,
)
async def dead_letters(call: OperatorRequest, limit: int = 100, offset: int = 0) -> Response:
    """Newest first, with the last error of each."""
    bounded = max(1, min(limit, 1000)), max(0, offset)
    letters = await run_in_threadpool(lambda: admin.dead_letters(_store(call), *bounded))
    return call.runtime.envelope.ok(letters)


@router.post(
    REPLAY,
    responses=error_responses(400, 401, 403, 503),
    summary="Send dead webhook deliveries again",
    openapi_extra=_SIGNED,
)
async def replay(
    call: OperatorRequest,
    delivery: Annotated[list[str], Query(max_length=100)] = [],  # noqa: B006  # FastAPI's form
    all: bool = False,
) -> Response:
    """``delivery`` (repeatable): ``<endpoint>:<webhook id>``; ``all``: every dead letter.
    The same webhook id and body as before, so receivers dedupe what they did get."""
    result: dict[str, Any] = await run_in_threadpool(
        lambda: admin.replay(_store(call), list(delivery), all)
    )
    return call.runtime.envelope.ok(result)
