"""``GET /sender/v1/messages/{getMessageId}/recipients``: a multi-recipient message's
recipients, one page at a time (docs/api.md, "Fan-out").

Signed like the status endpoints and addressed the same way, through
:func:`~dispatcher.api.tenancy.message_ref` (the caller's own, or an admin's ``owner``):
a client never sees another's message; an unknown id, or a message with one recipient,
is 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatcher.api.envelope import error_responses
from dispatcher.api.message_actions import MessageId
from dispatcher.api.paths import RECIPIENTS
from dispatcher.api.routes import SignedCall, SignedRequest
from dispatcher.api.tenancy import message_ref, namespace_of
from dispatcher.errors import NotFound
from dispatcher.limits import MAX_RECIPIENTS_PAGE
from dispatcher.store.recipients import RecipientState

router = APIRouter()


@router.get(
    RECIPIENTS,
    responses=error_responses(400, 401, 404, 503),
    summary="Recipients of a multi-recipient message",
    tags=["status"],
    openapi_extra={"x-dispatcher-signed": True},
)
async def recipients(
    call: SignedRequest,
    getMessageId: MessageId,
    state: Annotated[
        RecipientState | None, Query(description="only recipients in this state")
    ] = None,
    cursor: Annotated[int, Query(ge=0, description="where to start: a page's nextCursor")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_RECIPIENTS_PAGE)] = MAX_RECIPIENTS_PAGE,
) -> Response:
    """``data.recipients``: each recipient in the order of the message's ``to`` with its
    ``state`` (``pending``, ``delivered``, ``failed``), its ``providerMessageId`` when
    delivered and its ``error`` code when failed; ``data.nextCursor``: pass it as
    ``cursor`` for the next page (null after the last). A page holds at most ``limit``
    recipients, fewer when ``state`` filters them out."""
    answer = await run_in_threadpool(_page, call, getMessageId, state, cursor, limit)
    return call.runtime.envelope.ok(answer)


def _page(
    call: SignedCall, message_id: str, state: RecipientState | None, cursor: int, limit: int
) -> dict[str, Any]:
    call.runtime.admission.claim(call.caller)
    store = call.runtime.dispatcher.store
    page = store.recipients.page(
        message_ref(call, message_id), state=state, cursor=cursor, limit=limit
    )
    if page is None:
        raise NotFound(f"no multi-recipient message {message_id} of client {namespace_of(call)}")
    return {
        "getMessageId": message_id,
        "recipients": [outcome.public() for outcome in page.outcomes],
        "nextCursor": page.cursor,
    }
