"""Redis connections with the timeouts, health checks and pool bounds a long-running service needs.

Every client here draws on a *blocking* pool: when all its connections are busy a
call waits for one, at most ``DISPATCHER_REDIS_POOL_TIMEOUT`` seconds, and then
raises :class:`PoolExhausted` ("busy", not "down"). A burst larger than the pool
therefore costs latency, not errors, and the number of connections a process
opens is bounded whatever its load. Within a request's budget (an API submit,
:mod:`dispatcher.redis_budget`), all its Redis calls end by one deadline.
How the sizes and the ceiling follow from each process kind's concurrency:
docs/operations.md, "Load bounds".
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import redis
from redis.asyncio import ConnectionPool as AsyncConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelConnection
from redis.backoff import ExponentialBackoff
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from dispatcher.cluster import async_cluster_client, cluster_client, cluster_target
from dispatcher.config import Settings
from dispatcher.redis_budget import (
    AsyncDeadlineRetry,
    DeadlineRetry,
    current_budget,
    time_left,
    within,
)
from dispatcher.sentinel import SentinelTarget, sentinel_target


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

_CLUSTER_TIMEOUTS: dict[str, Any] = {
    "socket_timeout": SOCKET_TIMEOUT,
    "socket_connect_timeout": 2,
}
"""A cluster client retries on its own: it follows MOVED and ASK and asks the cluster
for its slots again after a node fails."""

RETRIES = 2
BACKOFF_CAP = 0.5
COMMAND_BUDGET = SOCKET_TIMEOUT
"""Seconds a request's Redis calls may take beyond the pool wait budget: connecting,
health checks, every attempt and the back-off between them."""


def _backoff() -> ExponentialBackoff:
    return ExponentialBackoff(cap=BACKOFF_CAP, base=0.05)


def request_ceiling(settings: Settings) -> float:
    """The longest a submit waits for Redis, in seconds (docs/operations.md, "Load bounds"):
    its calls (the memory check, the script) share one budget
    (:func:`dispatcher.redis_budget.redis_budget`) that ends this long after the first
    of them starts."""
    return settings.redis_pool_timeout + COMMAND_BUDGET


class _WaitingPool(redis.BlockingConnectionPool):
    """A blocking pool whose timeout raises :class:`PoolExhausted`."""

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if budget is not None:
            time_left(budget)  # spent already: wait for nothing
        try:
            return super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis.ConnectionError as exc:
            # redis-py raises a plain ConnectionError while handling the queue's Empty.
            if isinstance(exc.__context__, queue.Empty):
                raise PoolExhausted(_exhausted(self.max_connections, self.timeout)) from None
            raise

    def make_connection(self) -> Any:
        connection = super().make_connection()  # type: ignore[no-untyped-call]
        connection.retry.connection = connection  # each connection has its own copy
        return connection


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
        budget = current_budget()
        if self._slots.locked():
            wait = self.timeout if budget is None else min(self.timeout, time_left(budget))
            try:
                async with asyncio.timeout(wait):
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
            if not await _ready(connection):
                async with within(budget):  # (re)connecting may wait: within the budget
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


async def _ready(connection: Any) -> bool:
    """Connected with nothing left to read: usable as is, without a check that may wait
    (and without the timer a budgeted wait costs, which over thousands of calls a second
    shows in the API's CPU)."""
    if not connection.is_connected:
        return False
    try:
        return not await connection.can_read()
    except (redis.RedisError, OSError):
        return False


def _exhausted(size: int, timeout: float | None) -> str:
    return f"all {size} Redis connections of this process stayed busy for {timeout}s"


def blocking_pool_size(settings: Settings) -> int:
    """Connections of a threaded process's client: enough that a worker's delivery threads
    never wait for one another; producers, the CLI and the API's thread pool share
    ``DISPATCHER_REDIS_MAX_CONNECTIONS`` and queue beyond it."""
    return max(settings.redis_max_connections, settings.worker_concurrency + SPARE_CONNECTIONS)


def redis_client(settings: Settings, *, max_connections: int | None = None) -> redis.Redis:
    """A pooled client with the timeouts and retries of a long-running service; for a
    ``redis+cluster://`` URL a cluster client (dispatcher/cluster.py) with a pool per node."""
    size = max_connections or blocking_pool_size(settings)
    cluster = cluster_target(settings.redis_url)
    if cluster is not None:
        return cluster_client(cluster, max_connections=size, **_CLUSTER_TIMEOUTS)
    pool = _sync_pool(
        settings.redis_url,
        max_connections=size,
        timeout=settings.redis_pool_timeout,
        retry=DeadlineRetry(_backoff(), retries=RETRIES),
        **_TIMEOUTS,
    )
    return redis.Redis(connection_pool=pool)


def async_redis_client(settings: Settings, *, max_connections: int | None = None) -> AsyncRedis:
    """:func:`redis_client` for asyncio code (the HTTP API's submit path): one event loop
    multiplexes ``DISPATCHER_API_REDIS_CONNECTIONS`` connections among its requests."""
    cluster = cluster_target(settings.redis_url)
    if cluster is not None:
        size = max_connections or settings.api_redis_connections
        return async_cluster_client(cluster, max_connections=size, **_CLUSTER_TIMEOUTS)
    pool = _async_pool(
        settings.redis_url,
        max_connections=max_connections or settings.api_redis_connections,
        timeout=settings.redis_pool_timeout,
        retry=AsyncDeadlineRetry(_backoff(), retries=RETRIES),
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


# ---------------------------------------------------------------------------
# Redis Sentinel (dispatcher/sentinel.py): the same pools, each connection asking the
# sentinels where the primary is when it (re)connects. After a failover a connection
# to the old primary fails (or answers READONLY) and is dropped; the retry reconnects
# to the primary the sentinels name now, so no process needs a restart.

SENTINEL_TIMEOUT = 1.0
"""Seconds to wait for one sentinel before asking the next."""
_SENTINEL_OPTIONS = {"socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT}


class _SentinelWaitingPool(_WaitingPool, SentinelConnectionPool):
    """:class:`_WaitingPool` whose connections follow the Sentinel set's primary."""


class _AsyncSentinelWaitingPool(_AsyncWaitingPool, AsyncSentinelPool):
    """:class:`_AsyncWaitingPool` whose connections follow the Sentinel set's primary."""


def _sentinel_login(target: SentinelTarget) -> dict[str, Any]:
    return {"db": target.db, "username": target.username, "password": target.password}


def _sentinels(target: SentinelTarget) -> Sentinel:
    return Sentinel(list(target.sentinels), sentinel_kwargs=_SENTINEL_OPTIONS)  # type: ignore[no-untyped-call]


def _sync_pool(url: str, **options: Any) -> redis.ConnectionPool:
    target = sentinel_target(url)
    if target is None:
        return _WaitingPool.from_url(url, **options)
    return _SentinelWaitingPool(  # type: ignore[no-untyped-call]
        service_name=target.service,
        sentinel_manager=_sentinels(target),
        connection_class=SentinelManagedConnection,
        **_sentinel_login(target),
        **options,
    )


def _async_pool(url: str, **options: Any) -> AsyncConnectionPool:
    target = sentinel_target(url)
    if target is None:
        return _AsyncWaitingPool.from_url(url, **options)
    sentinels = AsyncSentinel(list(target.sentinels), sentinel_kwargs=_SENTINEL_OPTIONS)  # type: ignore[no-untyped-call]
    return _AsyncSentinelWaitingPool(
        service_name=target.service,
        sentinel_manager=sentinels,
        connection_class=AsyncSentinelConnection,
        **_sentinel_login(target),
        **options,
    )


def probe_client(url: str, timeout: float) -> redis.Redis:
    """A client that answers fast when Redis is down: no retries, short timeouts (the
    readiness probe's and the metrics'); a Sentinel URL's follows the primary too."""
    target = sentinel_target(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "max_connections": 4,
    }
    cluster = cluster_target(url)
    if cluster is not None:
        return cluster_client(cluster, **options)
    if target is None:
        return redis.Redis.from_url(url, **options)
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        target.service, _sentinels(target), **_sentinel_login(target), **options
    )
    return redis.Redis(connection_pool=pool)
