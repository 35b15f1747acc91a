"""Redis connections with the timeouts, health checks and pool bounds a long-running service needs.

Every client here draws on a *blocking* pool: when all its connections are busy a
call waits for one, at most ``DISPATCHER_REDIS_POOL_TIMEOUT`` seconds, and then
raises :class:`PoolExhausted` ("busy", not "down"). A burst larger than the pool
therefore costs latency, not errors, and the number of connections a process
opens is bounded whatever its load. How the sizes follow from each process
kind's concurrency: docs/operations.md, "Load bounds".
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import redis
from redis.asyncio import ConnectionPool as AsyncConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from dispatcher.config import Settings


class PoolExhausted(redis.ConnectionError):
    """No pooled connection became free within the wait budget: Redis is busy or stalled.

    Raised before anything was sent, so the call had no effect.
    """


REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.BusyLoadingError,
    redis.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,
)
"""Redis errors that mean "unavailable right now", not "bug" (:class:`PoolExhausted` too)."""

SPARE_CONNECTIONS = 4
"""Connections a worker needs beside its delivery threads (reaper, heartbeat, health)."""


def text(value: bytes | str | int | float) -> str:
    """A Redis reply as text (clients here do not decode replies)."""
    return value.decode() if isinstance(value, bytes) else str(value)


# Short timeouts so a dead Redis becomes a clear error, not a hang; two quick retries.
SOCKET_TIMEOUT = 5.0
_TIMEOUTS: dict[str, Any] = {
    "socket_timeout": SOCKET_TIMEOUT,
    "socket_connect_timeout": 2,
    "health_check_interval": 15,
    "retry_on_error": [redis.ConnectionError, redis.TimeoutError],
}


RETRIES = 2
BACKOFF_CAP = 0.5


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=BACKOFF_CAP, base=0.05)


def request_ceiling(settings: Settings) -> float:
    """The longest a submit waits for Redis, in seconds (docs/operations.md, "Load bounds"):
    at most two Redis calls (the memory check, which one request per interval makes, and
    the script), each waiting its budget for a pooled connection and then timing out on
    every attempt. A stall shorter than the socket timeout costs only its own length."""
    attempts = (1 + RETRIES) * SOCKET_TIMEOUT + RETRIES * BACKOFF_CAP
    return 2 * (settings.redis_pool_timeout + attempts)


class _WaitingPool(redis.BlockingConnectionPool):
    """A blocking pool whose timeout raises :class:`PoolExhausted`."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            # redis-py raises a plain ConnectionError while handling the queue's Empty.
            if isinstance(exc.__context__, queue.Empty):
                raise PoolExhausted(_exhausted(self.max_connections, self.timeout)) from None
            raise


class _AsyncWaitingPool(AsyncConnectionPool):
    """The asyncio pool: ``max_connections`` slots handed out first come, first served.

    redis-py's asyncio blocking pool wakes a waiter, but a request arriving meanwhile may
    take the connection first; under a sustained burst some requests then wait many times
    the average. A FIFO semaphore in front of the plain pool keeps every wait near the
    queue's length divided by the throughput.
    """

    def __init__(self, *, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(self.max_connections)

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self.timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolExhausted(_exhausted(self.max_connections, self.timeout)) from None
        else:
            await self._slots.acquire()  # free now: no timer needed
        try:
            async with self._lock:
                connection = self.get_available_connection()  # type: ignore[no-untyped-call]
        except BaseException:
            self._slots.release()
            raise
        try:
            await self.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def release(self, connection: Any) -> None:
        try:
            await super().release(connection)
        finally:
            self._slots.release()


def _exhausted(size: int, timeout: float | None) -> str:
    return f"all {size} Redis connections of this process stayed busy for {timeout}s"


def blocking_pool_size(settings: Settings) -> int:
    """Connections of a threaded process's client: enough that a worker's delivery threads
    never wait for one another; producers, the CLI and the API's thread pool share
    ``DISPATCHER_REDIS_MAX_CONNECTIONS`` and queue beyond it."""
    return max(settings.redis_max_connections, settings.worker_concurrency + SPARE_CONNECTIONS)


def redis_client(settings: Settings, *, max_connections: int | None = None) -> redis.Redis:
    """A pooled client with the timeouts and retries of a long-running service."""
    pool = _WaitingPool.from_url(
        settings.redis_url,
        max_connections=max_connections or blocking_pool_size(settings),
        timeout=settings.redis_pool_timeout,
        retry=Retry(_backoff(), retries=RETRIES),
        **_TIMEOUTS,
    )
    return redis.Redis(connection_pool=pool)


def async_redis_client(settings: Settings, *, max_connections: int | None = None) -> AsyncRedis:
    """:func:`redis_client` for asyncio code (the HTTP API's submit path): one event loop
    multiplexes ``DISPATCHER_API_REDIS_CONNECTIONS`` connections among its requests."""
    pool = _AsyncWaitingPool.from_url(
        settings.redis_url,
        max_connections=max_connections or settings.api_redis_connections,
        timeout=settings.redis_pool_timeout,
        retry=AsyncRetry(_backoff(), retries=RETRIES),
        **_TIMEOUTS,
    )
    return AsyncRedis(connection_pool=pool)


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
