"""Whose messages a signed request addresses (docs/architecture.md, "Message references").

A client's caller-chosen getMessageIds live in its own namespace, its client id: every
endpoint that takes a getMessageId turns it into a reference with :func:`message_ref`,
so a client only ever reaches its own messages and an answer never depends on another
client's data. An admin client addresses another client's messages by naming it in the
``owner`` query parameter (signed like every parameter); each such reference is logged.
"""

from __future__ import annotations

import logging
from typing import Protocol

from dispatcher.api.auth import Caller
from dispatcher.errors import FieldError, Forbidden, InvalidMessage
from dispatcher.ids import NAMESPACE_PATTERN, MessageRef

log = logging.getLogger(__name__)

OWNER_PARAM = "owner"
"""Query parameter naming the client whose messages an admin request addresses."""


class Addressed(Protocol):
    """A signed request: who called, and which namespace it addresses."""

    @property
    def caller(self) -> Caller: ...

    @property
    def owner(self) -> str | None: ...


def requested_owner(caller: Caller, owner: str | None) -> str | None:
    """The ``owner`` a request may address: None when not given or the caller's own;
    Forbidden for a plain client naming another, InvalidMessage when malformed."""
    if owner is None or owner == caller.namespace:
        return None
    if not caller.sees_everything:
        raise Forbidden("only admin clients address another client's messages")
    if not NAMESPACE_PATTERN.fullmatch(owner):
        raise InvalidMessage(
            [FieldError(OWNER_PARAM, "must be a client id: 1..64 of A-Z a-z 0-9 . _ ~ -")]
        )
    return owner


def namespace_of(call: Addressed) -> str:
    """The namespace the request addresses: ``owner`` (admin), else the caller's own."""
    return call.owner or call.caller.namespace


def message_ref(call: Addressed, message_id: str) -> MessageRef:
    """The message ``message_id`` names for this request; an admin reaching into another
    client's namespace is logged (admin, target client, getMessageId)."""
    if call.owner is not None:
        log.info(
            "admin client %s addresses getMessageId=%s of client %s",
            call.caller.client,
            message_id,
            call.owner,
        )
    return MessageRef(namespace_of(call), message_id)


def dead_letter_scope(call: Addressed) -> str | None:
    """The namespace whose dead letters a request lists (or replays with ``all``): the
    caller's, ``owner``'s, or None, every client's, for an admin naming no ``owner``."""
    if call.caller.sees_everything and call.owner is None:
        return None
    if call.owner is not None:
        log.info("admin client %s reads dead letters of client %s", call.caller.client, call.owner)
    return namespace_of(call)
