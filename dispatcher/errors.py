"""One exception hierarchy for the whole package.

Callers catch :class:`DispatcherError` for anything of ours, or one precise case.
Provider errors carry ``retryable`` so the delivery loop needs no other table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class DispatcherError(Exception):
    """Base of every error dispatcher raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    field: str
    error: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "error": self.error}


class InvalidMessage(DispatcherError):
    """The submitted message broke a rule; ``errors`` names every broken field."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        summary = "; ".join(f"{e.field}: {e.error}" for e in errors)
        super().__init__(f"invalid message: {summary}")


class MessageTooLarge(InvalidMessage):
    """The provider body would exceed the provider's size limit."""


class Conflict(DispatcherError):
    """A getMessageId was reused for a different message."""

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id
        super().__init__(f"getMessageId {message_id} is already used for a different message")


class Unavailable(DispatcherError):
    """Redis or the broker is unreachable or refusing writes: nothing was accepted.

    The message is for operators (it may name hosts and ports); ``public`` is a
    reason safe to show callers, when there is one worth more than "retry later".
    """

    def __init__(self, message: str, *, public: str | None = None) -> None:
        self.public = public
        super().__init__(message)


NOT_REPLICATED = (
    "service unavailable: the message could not be confirmed on enough Redis replicas and "
    "nothing is promised (it may still be delivered); retry after Retry-After seconds with "
    "the same getMessageId"
)


class NotReplicated(Unavailable):
    """The record was written but fewer Redis replicas than ``DISPATCHER_REDIS_MIN_REPLICAS``
    acknowledged it in time: 503 with ``Retry-After`` (docs/deployment.md, "Redis Sentinel")."""

    def __init__(self, message: str) -> None:
        super().__init__(message, public=NOT_REPLICATED)


SERVICE_BUSY = "service busy: nothing was accepted, retry after Retry-After seconds"


class Busy(Unavailable):
    """The service is saturated, not broken: too many submits in flight in this process, or
    no Redis connection came free within its wait budget. Nothing was sent or kept; the
    API answers 503 with ``Retry-After`` (docs/operations.md, "Load bounds")."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        """Seconds the server asked to wait (known to HTTP clients; the server sets it)."""
        super().__init__(message, public=SERVICE_BUSY)


class ConfigurationError(DispatcherError):
    """A setting needed for this operation is missing or wrong."""


class DeliveryError(DispatcherError):
    """One delivery attempt failed.

    ``retryable`` decides between another attempt and a permanent failure;
    ``retry_after`` is the provider's own wait hint in seconds, when it gave one;
    ``ambiguous`` marks a failure after which the provider may have delivered.
    A subclass with ``defers`` set is a deferral, not a failure: the message waits
    ``retry_after`` seconds and the attempt is not counted (a provider's quota pause).
    """

    defers = False

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        ambiguous: bool = False,
        status: int | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.ambiguous = ambiguous
        self.status = status
        super().__init__(f"{code}: {message}")


class LeaseLost(DispatcherError):
    """The attempt no longer holds its lease (another attempt took it over): it must not
    call the provider again. Not a :class:`DeliveryError`, so no channel handles it."""


class ProviderError(DeliveryError):
    """The messaging provider (Easemob) refused or failed a call."""


class MediaError(DeliveryError):
    """Media could not be resolved or is outside the limits (Qiniu)."""


# ---------------------------------------------------------------------------
# Answers of the HTTP API other than 200 (the client raises the same classes)


class ApiError(DispatcherError):
    """An answer of the HTTP API other than 200, carrying the envelope's code and message."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        super().__init__(f"{code}: {message}")


AUTHENTICATION_FAILED = "authentication failed"


class Unauthorized(ApiError):
    """401: unknown client, channel not allowed, bad or missing sign, stale timestamp, replay.

    Every one of them answers the same ``message``, so a caller cannot tell which check
    failed (no enumeration of clients or channels); ``reason`` is for the server's log.
    """

    def __init__(self, reason: str = AUTHENTICATION_FAILED) -> None:
        self.reason = reason
        super().__init__(401, AUTHENTICATION_FAILED)


class Forbidden(ApiError):
    """403: the caller is authenticated but not an operator (admin client)."""

    def __init__(self, message: str = "operators only: the client must be an admin") -> None:
        super().__init__(403, message)


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


class RecallRefused(ApiError):
    """409: the message cannot be recalled; ``reason`` says why (docs/api.md, "Recall")."""

    def __init__(self, reason: str, message: str, **data: Any) -> None:
        self.reason = reason
        super().__init__(409, message, {"reason": reason, **data})


class NotFound(ApiError):
    """404: no such message, or it belongs to another client."""

    def __init__(self, message: str = "not found") -> None:
        super().__init__(404, message)
