"""F6: Redis near maxmemory refuses new work clearly and evicts nothing; unsafe settings are called out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from dispatcher import Dispatcher, keys
from dispatcher.api.app import create_app
from dispatcher.errors import Unavailable
from dispatcher.health import RedisHealth, redis_warnings
from dispatcher.sandbox.server import ServerThread
from tests.conftest import ref, settings_from_env
from tests.fault.harness import (
    assert_invariants,
    new_id,
    records_of,
    submit_texts,
    text_message,
    wait_all_terminal,
    wait_until,
)

pytestmark = pytest.mark.fault

FILLER = b"x" * 100_000


@pytest.fixture(scope="module")
def redis_options() -> dict[str, Any]:
    return {"maxmemory": "32mb"}


@pytest.fixture()
def admin(redis_server: Any) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("appendonly", "yes")
    client.close()


def used_ratio(client: redis.Redis) -> float:
    info = client.info("memory")
    return int(info["used_memory"]) / int(info["maxmemory"])


def fill(client: redis.Redis, ratio: float, start: int = 0) -> int:
    """Filler keys (with a TTL) until Redis memory is at ``ratio`` of maxmemory."""
    index = start
    while used_ratio(client) < ratio:
        client.set(f"filler:{index}", FILLER, ex=600)
        index += 1
        assert index < 10_000
    return index


def refuses(health: RedisHealth) -> bool:
    """The gate refuses new work now (it reads Redis when its reading is stale)."""
    try:
        health.admit()
    except Unavailable:
        return True
    return False


def test_nearly_full_redis_refuses_new_work_with_a_clear_error_and_evicts_nothing(
    dispatcher: Any,
    easemob: Any,
    start_worker: Any,
    api: Any,
    admin: redis.Redis,
    fault_env: dict[str, str],
) -> None:
    start_worker()
    assert redis_warnings(admin) == [], "noeviction and AOF: nothing to warn about"
    early = submit_texts(dispatcher, 20, prefix="early")
    wait_all_terminal(dispatcher, early, timeout=20)

    filled = fill(admin, 0.93)
    # Each gate reads Redis memory once per DISPATCHER_MEMORY_CHECK_INTERVAL.
    wait_until(lambda: refuses(dispatcher.health), 10, "the producer sees memory nearly full")
    wait_until(lambda: refuses(api.health), 10, "the API sees memory nearly full")
    refused = new_id("full")
    with pytest.raises(Unavailable, match="memory nearly full"):
        dispatcher.submit(text_message(refused))
    refused_api = new_id("full")
    reply = api.submit(text_message(refused_api))
    assert reply.status_code == 503, reply.text
    assert "storage is nearly full" in reply.json()["message"], reply.text
    print(f"\nF6: at {used_ratio(admin):.0%} of maxmemory: producer {refused!r} refused, API 503")
    for message_id in (refused, refused_api):
        assert admin.exists(keys.message(ref(message_id))) == 0, "a refusal leaves no trace"
    assert admin.llen(dispatcher.settings.queue) == 0

    # With the guard off, Redis's own OOM error is still a clear Unavailable.
    unguarded = Dispatcher(settings_from_env({**fault_env, "DISPATCHER_MEMORY_REFUSE_RATIO": "0"}))
    limit = int(admin.config_get("maxmemory")["maxmemory"])
    try:
        with contextlib.suppress(redis.exceptions.OutOfMemoryError):
            fill(admin, 1.01, start=filled)
        # Memory hovers at the limit once writes fail; put the limit well below it so the
        # submit surely meets Redis's OOM refusal (a script that starts under it may write,
        # and buffers freed meanwhile can lower the figure by more than a megabyte).
        used = int(admin.info("memory")["used_memory"])
        admin.config_set("maxmemory", used // 2)
        with pytest.raises(Unavailable):
            unguarded.submit(text_message(new_id("oom")))
    finally:
        admin.config_set("maxmemory", limit)
        unguarded.close()

    assert int(admin.info("stats")["evicted_keys"]) == 0, "noeviction: nothing evicted"
    assert all(r is not None for r in records_of(dispatcher, early).values())

    for key in admin.scan_iter("filler:*", count=1000):
        admin.delete(key)
    wait_until(lambda: not refuses(dispatcher.health), 10, "the producer sees memory free")
    wait_until(lambda: not refuses(api.health), 10, "the API sees memory free")
    later = submit_texts(dispatcher, 5, prefix="later")
    assert api.submit(text_message(new_id("later"))).status_code == 200
    records = assert_invariants(dispatcher, easemob, early + later, timeout=20)
    assert all(r.state.value == "delivered" for r in records.values())
    assert int(admin.info("stats")["evicted_keys"]) == 0


def test_unsafe_redis_settings_are_warned_about_by_workers_and_the_api_not_producers(
    easemob: Any,
    start_worker: Any,
    admin: redis.Redis,
    fault_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.config_set("appendonly", "no")
    warnings = redis_warnings(admin)
    assert len(warnings) == 2
    assert "allkeys-lru" in warnings[0] and "noeviction" in warnings[0]
    assert "persistence is off" in warnings[1]

    worker = start_worker()
    assert "UNSAFE REDIS CONFIGURATION (worker)" in worker.log()
    assert "maxmemory-policy is 'allkeys-lru'" in worker.log()

    settings = settings_from_env({**fault_env, "DISPATCHER_AUTH_ENABLED": "false"})
    with caplog.at_level(logging.WARNING, logger="dispatcher.health"):
        producer = Dispatcher(settings)
        try:
            for _ in range(3):
                producer.submit(text_message(new_id("warn")))
        finally:
            producer.close()
        assert not [r for r in caplog.records if "UNSAFE" in r.getMessage()], "producers stay quiet"
        with ServerThread(create_app(settings)) as server:
            for _ in range(3):
                ready = httpx.get(f"{server.url}/readyz", timeout=10).json()["data"]
    unsafe = [r for r in caplog.records if "UNSAFE REDIS CONFIGURATION (api)" in r.getMessage()]
    assert len(unsafe) == 2, "each problem said once, at start-up"
    assert ready["warnings"] == warnings
