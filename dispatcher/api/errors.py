"""Errors only the HTTP API produces (they extend :mod:`dispatcher.errors`' hierarchy).

The client raises the same classes for the same answers, so a caller catches
one type whether it talks to the API over HTTP or not.
"""

from __future__ import annotations

from typing import Any

from dispatcher.errors import DispatcherError


class ApiError(DispatcherError):
    """An answer of the HTTP API other than 200, carrying the envelope's code and message."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"{code}: {message}")


class Unauthorized(ApiError):
    """401: unknown client, channel not allowed, bad or missing sign, stale timestamp, replay."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message)


class RateLimited(ApiError):
    """429: the client's submit rate limit is used up; ``retry_after`` in seconds."""

    def __init__(self, client: str, retry_after: float, message: str | None = None) -> None:
        self.client = client
        self.retry_after = retry_after
        super().__init__(
            429,
            message or f"submit rate limit of client {client!r} exceeded; retry later",
            {"retryAfter": retry_after},
        )


class NotFound(ApiError):
    """404: no such message, or it belongs to another client."""

    def __init__(self, message: str = "not found") -> None:
        super().__init__(404, message)
