"""How much one request may carry: the request-level validation limits, in one place.

Per-field limits of a message (lengths, media sizes, nesting) stay beside the fields
they bound (:mod:`dispatcher.models`, :mod:`dispatcher.message_info`); this module
holds the limits of a request as a whole, which the API, the Python producer, the HTTP
client and the CLI all follow. The two body sizes are defaults of settings
(``DISPATCHER_MAX_REQUEST_BYTES``, ``DISPATCHER_MAX_BATCH_REQUEST_BYTES``); the rest
are fixed. docs/api.md lists them.
"""

from __future__ import annotations

MAX_REQUEST_BYTES = 64 * 1024
"""Default largest body of a request, one message's included (413 above)."""

MAX_BATCH_REQUEST_BYTES = 4 * 1024 * 1024
"""Default largest body of a batch submit, the only endpoint allowed more than
:data:`MAX_REQUEST_BYTES`; each of its messages is still held to that."""

MIN_BATCH_MESSAGES = 1
MAX_BATCH_MESSAGES = 500
"""Messages in one batch submit (``handleBatchMessage``, ``Dispatcher.submit_many``)."""

MAX_STATUS_IDS = 100
"""getMessageIds in one status lookup or dead-letter replay request."""


BATCH_WRAPPER_BYTES = len(b'{"messages":[]}')


def batch_request_bytes(single: int, batch: int) -> int:
    """The body limit of a batch submit: its own setting, but never so low that a batch of
    one largest single message would not fit."""
    return max(batch, single + BATCH_WRAPPER_BYTES)


MAX_USER_RECIPIENTS = 10_000
"""Users one message may name in a ``to`` list (a plain string is one recipient)."""

MAX_GROUP_RECIPIENTS = 100
"""Groups (or chat rooms) one message may name in a ``to`` list."""

MAX_RECIPIENT_CHARS = 64
"""Longest recipient id in a ``to`` list (Easemob user ids are at most 64 characters)."""

USERS_PER_CALL = 600
GROUPS_PER_CALL = 3
ROOMS_PER_CALL = 10
"""Recipients of one Easemob send call, by target type (Easemob refuses more with a 400)."""

MAX_RECIPIENTS_PAGE = 1000
"""Recipients in one page of ``GET /sender/v1/messages/{id}/recipients``."""


def fanout_request_bytes(single: int) -> int:
    """The body limit of a single-message submit: its setting plus room for a full ``to``
    list (each id at most 4 UTF-8 bytes a character, quoted, comma-separated)."""
    return single + MAX_USER_RECIPIENTS * (MAX_RECIPIENT_CHARS * 4 + 3)
