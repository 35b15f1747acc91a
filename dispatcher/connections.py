"""Redis connections with the timeouts and health checks a long-running service needs."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from dispatcher.config import Settings

REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)
"""Redis errors that mean "unavailable right now", not "bug"."""


def redis_client(settings: Settings, *, max_connections: int = 64) -> redis.Redis:
    """A pooled client: short timeouts so a dead Redis becomes a clear error, not a hang."""
    return redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        max_connections=max_connections,
    )
