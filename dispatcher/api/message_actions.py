"""Taking a message back: ``POST .../messages/{getMessageId}/cancel`` and ``.../recall``
(docs/api.md, "Send later, cancel, recall").

Both are signed like the status endpoints and address messages the same way, through
:func:`~dispatcher.api.tenancy.message_ref` (the caller's own, or an admin's ``owner``):
an unknown id is 404. The body is ignored.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatcher.api.envelope import error_responses
from dispatcher.api.paths import CANCEL, RECALL
from dispatcher.api.routes import SignedCall, SignedRequest
from dispatcher.api.tenancy import message_ref, namespace_of
from dispatcher.errors import NotFound
from dispatcher.ids import ID_PATTERN
from dispatcher.store import CancelOutcome
from dispatcher.withdraw import recipients

router = APIRouter()

MessageId = Annotated[str, Path(pattern=ID_PATTERN.pattern, description="the id submit answered")]


@router.post(
    CANCEL,
    responses=error_responses(400, 401, 404, 503),
    summary="Cancel a message not sent yet",
    tags=["messages"],
    openapi_extra={"x-dispatcher-signed": True},
)
async def cancel(call: SignedRequest, getMessageId: MessageId) -> Response:
    """``scheduled``, ``queued`` or ``retrying`` -> ``cancelled``. ``data.outcome`` says
    what happened: ``cancelled``, ``in_flight`` (an attempt is running and finishes) or
    ``already_done`` (``data.state`` is its final state)."""
    answer = await run_in_threadpool(_cancel, call, getMessageId)
    return call.runtime.envelope.ok(answer)


def _cancel(call: SignedCall, message_id: str) -> dict[str, Any]:
    call.runtime.admission.claim(call.caller)
    result = call.runtime.dispatcher.cancel(message_ref(call, message_id), by=call.caller.client)
    if result.outcome is CancelOutcome.NOT_FOUND:
        raise NotFound(f"no message {message_id} of client {namespace_of(call)}")
    answer: dict[str, Any] = {
        "getMessageId": message_id,
        "outcome": result.outcome.value,
        "state": None if result.state is None else result.state.value,
    }
    if result.was is not None:
        answer["was"] = result.was.value
    return answer


@router.post(
    RECALL,
    responses=error_responses(400, 401, 404, 409, 503),
    summary="Recall a delivered message",
    tags=["messages"],
    openapi_extra={"x-dispatcher-signed": True},
)
async def recall(call: SignedRequest, getMessageId: MessageId) -> Response:
    """Take a delivered message back from its recipients (Easemob), within the recall
    window: ``recalled`` with each recipient's outcome, or 409 with ``data.reason``
    (``window_passed``, ``not_enabled``, ``not_supported``, ``not_delivered``, ...)."""
    answer = await run_in_threadpool(_recall, call, getMessageId)
    return call.runtime.envelope.ok(answer)


def _recall(call: SignedCall, message_id: str) -> dict[str, Any]:
    call.runtime.admission.claim(call.caller)
    ref = message_ref(call, message_id)
    try:
        result = call.runtime.dispatcher.recall(ref, by=call.caller.client)
    except NotFound:
        raise NotFound(f"no message {message_id} of client {namespace_of(call)}") from None
    return {
        "getMessageId": message_id,
        "state": result.state.value,
        "recipients": recipients(result),
    }
