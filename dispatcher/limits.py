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
