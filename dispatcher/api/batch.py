"""``POST /sender/v1/handleBatchMessage``: up to 500 submits in one signed request.

The request is signed, read and replay-guarded once, like any other; each message is
then judged exactly as a ``handleBasicMessage`` body would be (validation, routing,
size, the client's rate, its getMessageId), and all those that pass are recorded and
queued in one Redis pipeline (dispatcher/batch.py). The answer is 200 with one result
per message, in order, unless the request itself is refused (401, 400 for a body that
is no batch, 413 over ``DISPATCHER_MAX_BATCH_REQUEST_BYTES``, 503 with nothing kept).
docs/api.md, "Batch submit".
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatcher import batch
from dispatcher.api.body import decode_json, too_large
from dispatcher.api.envelope import MESSAGES, BatchResponse, error_responses
from dispatcher.api.paths import SUBMIT_BATCH
from dispatcher.api.routes import Runtime, SignedCall, SignedRequest
from dispatcher.api.tenancy import OWNER_PARAM
from dispatcher.errors import (
    Conflict,
    DispatcherError,
    FieldError,
    InvalidMessage,
    Unavailable,
)
from dispatcher.models import Message
from dispatcher.producer import Submitted

router = APIRouter()

BODY_FIELDS = frozenset({batch.MESSAGES_FIELD})


def batch_payloads(payload: Any) -> list[Any]:
    """The messages of a batch body: InvalidMessage when it is no ``{"messages": [...]}``
    of 1 to 500 items (each item is judged on its own later)."""
    if not isinstance(payload, dict):
        raise InvalidMessage([FieldError("body", "must be a JSON object")])
    errors = [FieldError(k, "is not a known field") for k in payload if k not in BODY_FIELDS]
    messages = payload.get(batch.MESSAGES_FIELD)
    if messages is None:
        errors.append(FieldError(batch.MESSAGES_FIELD, "is required"))
    elif not isinstance(messages, list):
        errors.append(FieldError(batch.MESSAGES_FIELD, "must be a JSON array of messages"))
    if errors:
        raise InvalidMessage(errors)
    assert isinstance(messages, list)
    batch.check_batch_size(len(messages))
    return messages


@router.post(
    SUBMIT_BATCH,
    response_model=BatchResponse,
    responses=error_responses(400, 401, 413, 503),
    summary="Submit up to 500 messages at once",
    tags=["messages"],
    openapi_extra={"x-dispatcher-body": "BatchRequest", "x-dispatcher-signed": True},
)
async def handle_batch_message(call: SignedRequest) -> Response:
    """Judge each message as a single submit would and queue those that pass; answers
    ``results``, one per message in order: ``{"getMessageId"}`` for an accepted message,
    ``{"code", "message", "errors"}`` (the answer a single submit would have had) for a
    refused one, which left nothing behind."""
    rt = call.runtime
    if call.owner is not None:
        raise InvalidMessage([FieldError(OWNER_PARAM, "a client submits only its own messages")])
    payloads = batch_payloads(decode_json(call.body))
    client = call.caller.client
    checked = await run_in_threadpool(_judge, call, payloads)
    try:
        results = await batch.submit_async(
            rt.dispatcher,
            rt.async_redis.get(),
            checked,
            client=client,
            gate=rt.admission.gate(call.caller),
            namespace=call.caller.namespace,
        )
    except Unavailable:
        # Nothing was accepted: give the nonce back so the same bytes may be retried (also
        # after Busy, unlike a single submit: this nonce was claimed before the pipeline).
        await run_in_threadpool(rt.admission.release, call.caller)
        raise
    return rt.envelope.ok({"results": [_result(rt, client, r) for r in results]})


def _judge(call: SignedCall, payloads: list[Any]) -> list[Message | DispatcherError]:
    """Each message validated (in a thread: hundreds of them would hold the event loop up
    for other requests), then the request's nonce claimed, once, before anything is
    recorded: a replayed batch is refused whole."""
    rt = call.runtime
    checked = batch.validate_all(rt.dispatcher, payloads, call.caller.client)
    if len(call.body) > rt.settings.max_request_bytes:
        checked = _each_within(checked, payloads, rt.settings.max_request_bytes)
    rt.admission.claim(call.caller)
    return checked


def _each_within(
    checked: list[Message | DispatcherError], payloads: list[Any], limit: int
) -> list[Message | DispatcherError]:
    """A message larger than a single submit's body limit is refused (413) as it would be
    alone; measured as compact JSON, the smallest it could have been sent."""
    for index, payload in enumerate(payloads):
        if isinstance(checked[index], DispatcherError):
            continue
        encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        if len(encoded) > limit:
            checked[index] = too_large(limit)
    return checked


def _result(rt: Runtime, client: str | None, result: Submitted | DispatcherError) -> Any:
    """One entry of ``results``; each message counts as one submit in ``/metrics``."""
    if isinstance(result, Submitted):
        rt.metrics.count_submit(200, client)
        return {"getMessageId": result.message_id}
    code, message, data, _ = rt.envelope.parts(result)
    rt.metrics.count_submit(code, client, result)
    data = data if isinstance(data, dict) else {}
    errors = data.get("errors", [])
    if isinstance(result, Conflict):
        errors = [FieldError("getMessageId", "is already used for a different message").as_dict()]
    entry = {"code": code, "message": message or MESSAGES.get(code, "error"), "errors": errors}
    if "retryAfter" in data:
        entry["retryAfter"] = data["retryAfter"]
    return entry
