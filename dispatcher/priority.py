"""A message's priority and a client's share of the provider's limit (docs/operations.md,
"Priorities, weights and Easemob apps").

A submit may ask for ``high``, ``normal`` (the default) or ``bulk``; a client may ask
for no more than the ``max_priority`` of its ``DISPATCHER_CLIENTS`` entry (default
``normal``). The priority is recorded with the message at submit. Scheduling by
priority and by the client's ``weight`` is not done yet: today every message waits
in one queue, first come first served, whatever its priority.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from dispatcher.errors import Forbidden


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    BULK = "bulk"

    @property
    def rank(self) -> int:
        """Larger is more urgent."""
        return _RANKS[self]


_RANKS = {Priority.HIGH: 2, Priority.NORMAL: 1, Priority.BULK: 0}

DEFAULT_PRIORITY = Priority.NORMAL


def check_allowed(priority: Priority, client: str | None, allowed: Mapping[str, Priority]) -> None:
    """Raise :class:`Forbidden` (403) when ``priority`` is above ``client``'s
    ``max_priority`` (``allowed``, by client; a client not listed: the default). An
    in-process producer (no client) may ask for any."""
    if client is None:
        return
    limit = allowed.get(client, DEFAULT_PRIORITY)
    if priority.rank > limit.rank:
        raise Forbidden(
            f"priority {priority.value!r} is above the {limit.value!r} allowed to client "
            f"{client!r} (max_priority in its DISPATCHER_CLIENTS entry)"
        )
