"""Redis connections with the timeouts and health checks a long-running service needs."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
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


def text(value: bytes | str | int | float) -> str:
    """A Redis reply as text (clients here do not decode replies)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# Short timeouts so a dead Redis becomes a clear error, not a hang; two quick retries.
_TIMEOUTS: dict[str, Any] = {
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
    "health_check_interval": 15,
    "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
}


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=0.5, base=0.05)


def redis_client(settings: Settings, *, max_connections: int = 64) -> redis.Redis:
    """A pooled client with the timeouts and retries of a long-running service."""
    return redis.Redis.from_url(
        settings.redis_url,
        retry=Retry(_backoff(), retries=2),
        max_connections=max_connections,
        **_TIMEOUTS,
    )


def async_redis_client(settings: Settings, *, max_connections: int = 64) -> AsyncRedis:
    """:func:`redis_client` for asyncio code (the HTTP API's submit path)."""
    return AsyncRedis.from_url(
        settings.redis_url,
        retry=AsyncRetry(_backoff(), retries=2),
        max_connections=max_connections,
        **_TIMEOUTS,
    )


class LoopRedis:
    """An asyncio client for whichever event loop is running.

    An asyncio connection belongs to the loop that opened it. A server has one
    loop per process; code that runs the app on a new loop each time (test
    clients without a lifespan) gets a new client for each loop.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._bound: tuple[asyncio.AbstractEventLoop, AsyncRedis] | None = None

    def get(self) -> AsyncRedis:
        loop = asyncio.get_running_loop()
        bound = self._bound
        if bound is None or bound[0] is not loop:
            bound = self._bound = (loop, async_redis_client(self.settings))
        return bound[1]

    async def aclose(self) -> None:
        """Close the client of the running loop (the one the server shuts down on)."""
        bound, self._bound = self._bound, None
        if bound is not None and bound[0] is asyncio.get_running_loop():
            await bound[1].aclose()
