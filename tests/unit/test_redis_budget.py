"""A request's Redis budget (docs/operations.md, "Load bounds"): all the Redis calls made
within :func:`redis_budget` end by its deadline, on the asyncio and the blocking clients,
whether Redis is silent, a connection is held, or the time was spent by an earlier call."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.config import Settings
from dispatcher.connections import (
    SOCKET_TIMEOUT,
    PoolExhausted,
    async_redis_client,
    redis_client,
    request_ceiling,
)
from dispatcher.redis_budget import BudgetSpent, outside_budget, redis_budget

BUDGET = 0.6
SLACK = 1.0
"""Scheduling on a loaded test machine; far below the 5 s every attempt would take."""


def settings(url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=url, **overrides)


@pytest.fixture()
def silent_redis() -> Iterator[str]:
    """A server that accepts connections and never answers (a stalled Redis)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for connection in accepted:
        connection.close()
    listener.close()


def test_an_asyncio_call_to_a_silent_redis_ends_with_its_budget(silent_redis: str) -> None:
    async def scenario() -> float:
        client = async_redis_client(settings(silent_redis))
        started = time.monotonic()
        with redis_budget(BUDGET), pytest.raises(BudgetSpent):
            await client.ping()
        elapsed = time.monotonic() - started
        await client.aclose()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert BUDGET <= elapsed < BUDGET + SLACK


def test_a_blocking_call_to_a_silent_redis_ends_with_its_budget(silent_redis: str) -> None:
    client = redis_client(settings(silent_redis))
    started = time.monotonic()
    with redis_budget(BUDGET), pytest.raises(BudgetSpent):
        client.ping()
    elapsed = time.monotonic() - started
    client.close()
    assert BUDGET - 0.05 <= elapsed < BUDGET + SLACK


def test_calls_share_the_budget_a_later_one_gets_only_what_is_left(silent_redis: str) -> None:
    """The memory check and the script of one submit: together, not each, within it."""
    client = redis_client(settings(silent_redis))
    started = time.monotonic()
    with redis_budget(BUDGET):
        with pytest.raises(BudgetSpent):
            client.ping()
        with pytest.raises(BudgetSpent):
            client.ping()  # refused before sending: nothing left
    elapsed = time.monotonic() - started
    client.close()
    assert elapsed < BUDGET + SLACK


def test_a_wait_for_a_pooled_connection_is_cut_short_by_the_budget(redis_url: str) -> None:
    async def scenario() -> float:
        client = async_redis_client(settings(redis_url, redis_pool_timeout=30), max_connections=1)
        held = await client.connection_pool.get_connection()
        started = time.monotonic()
        with redis_budget(BUDGET), pytest.raises(PoolExhausted):
            await client.ping()  # nothing sent: "busy"
        elapsed = time.monotonic() - started
        await client.connection_pool.release(held)
        assert await client.ping() is True  # the pool is whole again
        await client.aclose()
        return elapsed

    elapsed = asyncio.run(scenario())
    assert BUDGET - 0.05 <= elapsed < BUDGET + SLACK


def test_a_pooled_connection_the_server_closed_is_opened_again_within_the_budget(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        client = async_redis_client(settings(redis_url), max_connections=1)
        killed = await client.client_id()
        admin = redis_client(settings(redis_url))
        assert admin.client_kill_filter(_id=killed) == 1
        admin.close()
        with redis_budget(BUDGET):
            assert await client.client_id() != killed  # a new connection, not an error
        await client.aclose()

    asyncio.run(scenario())


def test_a_budgeted_call_leaves_its_connection_with_the_usual_timeouts(redis_url: str) -> None:
    client = redis_client(settings(redis_url), max_connections=1)
    with redis_budget(BUDGET):
        assert client.ping() is True  # opens the connection within the budget
    assert client.ping() is True  # outside any budget
    connection = client.connection_pool.get_connection()
    try:
        assert connection.socket_timeout == SOCKET_TIMEOUT
        sock = getattr(connection, "_sock", None)
        assert sock is None or sock.gettimeout() == SOCKET_TIMEOUT
    finally:
        client.connection_pool.release(connection)
    client.close()


def test_undoing_a_request_s_work_is_not_cut_short_by_its_spent_budget(
    silent_redis: str, redis_url: str
) -> None:
    """A record removed after the broker refused its task: the broker's wait may have
    spent the budget, and a record left behind would be delivered after a 503."""
    stalled = redis_client(settings(silent_redis))
    client = redis_client(settings(redis_url))
    client.set("budget:undo", b"1")
    with redis_budget(BUDGET):
        with pytest.raises(BudgetSpent):
            stalled.ping()
        with pytest.raises(BudgetSpent):
            client.ping()
        with outside_budget():
            assert client.delete("budget:undo") == 1
    stalled.close()
    client.close()


def test_the_documented_ceiling_is_the_pool_wait_plus_the_budget_for_the_rest() -> None:
    assert request_ceiling(Settings(redis_pool_timeout=5)) == 10
    assert request_ceiling(Settings(redis_pool_timeout=1)) == 6
