"""Load bounds (docs/operations.md, "Load bounds"): a busy pool makes calls wait, within a
budget; past it, or past the in-flight bound, a submit is answered 503 "service busy" with
Retry-After at once, counted, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from dispatcher import Dispatcher
from dispatcher.api.paths import SUBMIT
from dispatcher.client import raise_for_envelope
from dispatcher.config import Settings
from dispatcher.connections import PoolExhausted, async_redis_client, redis_client
from dispatcher.errors import SERVICE_BUSY, Busy, Unavailable
from tests.unit.test_api_support import TEXT, Harness, body_of, make_harness, unique_id


def settings(redis_url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=redis_url, **overrides)


def test_a_busy_pool_makes_a_call_wait_for_a_connection_instead_of_failing(redis_url: str) -> None:
    client = redis_client(settings(redis_url, redis_pool_timeout=10), max_connections=1)
    pool = client.connection_pool
    held = pool.get_connection()
    threading.Timer(0.05, pool.release, [held]).start()
    assert client.ping() is True  # waited for the held connection, then used it
    client.close()


def test_a_pool_busy_past_its_budget_raises_pool_exhausted_sent_nothing(redis_url: str) -> None:
    client = redis_client(settings(redis_url, redis_pool_timeout=0.2), max_connections=1)
    held = client.connection_pool.get_connection()
    started = time.monotonic()
    with pytest.raises(PoolExhausted, match="all 1 Redis connections"):
        client.set("load-bounds:never", b"1")
    assert time.monotonic() - started >= 0.2
    client.connection_pool.release(held)
    assert client.exists("load-bounds:never") == 0
    client.close()


def test_the_asyncio_pool_waits_then_says_exhausted(redis_url: str) -> None:
    async def scenario() -> None:
        client = async_redis_client(settings(redis_url, redis_pool_timeout=0.2), max_connections=1)
        pool = client.connection_pool
        held = await pool.get_connection()
        with pytest.raises(PoolExhausted):
            await client.ping()
        asyncio.get_running_loop().call_later(
            0.05, lambda: asyncio.ensure_future(pool.release(held))
        )
        assert await client.ping() is True
        await client.aclose()

    asyncio.run(scenario())


def test_the_asyncio_pool_serves_waiters_in_arrival_order(redis_url: str) -> None:
    """A request arriving just as a connection comes free queues behind the earlier ones
    (else, under a sustained burst, a few wait many times the average and time out)."""

    async def scenario() -> list[str]:
        client = async_redis_client(settings(redis_url, redis_pool_timeout=10), max_connections=1)
        pool = client.connection_pool
        served: list[str] = []

        async def take(name: str) -> None:
            connection = await pool.get_connection()
            served.append(name)
            await pool.release(connection)

        held = await pool.get_connection()
        early = [asyncio.create_task(take(f"early-{i}")) for i in range(5)]
        await asyncio.sleep(0)  # let them queue (one loop turn, no wall-clock wait)
        await pool.release(held)
        late = asyncio.create_task(take("late"))
        await asyncio.gather(*early, late)
        await client.aclose()
        return served

    assert asyncio.run(scenario()) == [*(f"early-{i}" for i in range(5)), "late"]


def test_the_producer_answers_busy_and_keeps_nothing_when_its_pool_stays_busy(
    redis_url: str,
) -> None:
    config = settings(redis_url, redis_pool_timeout=0.2, queue=f"bounds-{unique_id()}")
    client = redis_client(config, max_connections=1)
    producer = Dispatcher(config, client=client)
    message_id = unique_id()
    held = client.connection_pool.get_connection()
    try:
        with pytest.raises(Busy):
            producer.submit({**TEXT, "getMessageId": message_id})
    finally:
        client.connection_pool.release(held)
    assert producer.status(message_id) is None
    assert producer.submit({**TEXT, "getMessageId": message_id}) == message_id
    producer.close()


# ---------------------------------------------------------------------------
# The API


@pytest.fixture()
def make_api(redis_url: str) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**overrides: Any) -> Harness:
        harness = make_harness(redis_url, **overrides)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def run_on_app(harness: Harness, scenario: Callable[[httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run ``scenario`` with an asyncio HTTP client on the app (on this test's own loop)."""

    async def main() -> None:
        transport = httpx.ASGITransport(app=harness.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            await scenario(http)

    asyncio.run(main())


async def post(http: httpx.AsyncClient, harness: Harness, message_id: str) -> httpx.Response:
    body = body_of({**TEXT, "getMessageId": message_id})
    return await http.post(SUBMIT, params=harness.params(body), content=body)


def busy_count(harness: Harness) -> float:
    registry = harness.app.state.runtime.metrics.registry
    return float(
        registry.get_sample_value("dispatcher_rejected_total", {"reason": "busy", "client": "-"})
        or 0
    ) + float(
        registry.get_sample_value("dispatcher_rejected_total", {"reason": "busy", "client": "c1"})
        or 0
    )


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    envelope = response.json()
    assert envelope["code"] == 503
    assert envelope["message"] == SERVICE_BUSY
    assert envelope["data"] == {"retryAfter": 1}


def test_past_the_in_flight_bound_a_submit_is_answered_busy_at_once(
    make_api: Callable[..., Harness],
) -> None:
    api = make_api(api_max_submits_in_flight=1, api_redis_connections=1, redis_pool_timeout=10)
    waiting, refused = unique_id(), unique_id()

    async def scenario(http: httpx.AsyncClient) -> None:
        pool = api.app.state.runtime.async_redis.get().connection_pool
        held = await pool.get_connection()
        first = asyncio.create_task(post(http, api, waiting))
        registry = api.app.state.runtime.metrics.registry
        deadline = time.monotonic() + 10
        while registry.get_sample_value("dispatcher_submits_in_flight") != 1:
            assert time.monotonic() < deadline, "the first submit never got in flight"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        assert_busy(await post(http, api, refused))
        assert time.monotonic() - started < 1, "refused at once, not after a wait"
        await pool.release(held)
        assert (await first).status_code == 200
        assert registry.get_sample_value("dispatcher_submits_in_flight") == 0

    run_on_app(api, scenario)
    assert api.has_record(waiting)
    assert not api.has_record(refused), "a busy refusal records nothing"
    assert busy_count(api) == 1


def test_a_submit_that_waits_past_the_redis_budget_is_busy_and_may_be_sent_again(
    make_api: Callable[..., Harness],
) -> None:
    api = make_api(api_redis_connections=1, redis_pool_timeout=0.2)
    message_id = unique_id()
    body = body_of({**TEXT, "getMessageId": message_id})
    params = api.params(body)

    async def scenario(http: httpx.AsyncClient) -> None:
        pool = api.app.state.runtime.async_redis.get().connection_pool
        held = await pool.get_connection()
        assert_busy(await http.post(SUBMIT, params=params, content=body))
        await pool.release(held)
        # The script never ran, so the nonce is unused: the very same request is accepted.
        again = await http.post(SUBMIT, params=params, content=body)
        assert again.status_code == 200, again.text

    run_on_app(api, scenario)
    assert api.has_record(message_id)
    assert busy_count(api) == 1


def test_the_http_client_raises_busy_with_the_wait_the_server_asked_for() -> None:
    busy = httpx.Response(
        503,
        headers={"Retry-After": "1"},
        json={"code": 503, "message": SERVICE_BUSY, "data": {"retryAfter": 1}},
    )
    with pytest.raises(Busy) as raised:
        raise_for_envelope(busy)
    assert raised.value.retry_after == 1
    down = httpx.Response(503, json={"code": 503, "message": "service unavailable"})
    with pytest.raises(Unavailable) as raised_down:
        raise_for_envelope(down)
    assert not isinstance(raised_down.value, Busy)
