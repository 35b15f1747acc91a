"""The unsafe-Redis warning is said where an operator looks: once when a worker or the API
starts, and in /readyz; never by the short-lived CLI commands."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from dispatcher.embedded import RedisServer
from tests.conftest import ROOT, WorkerProcess
from tests.unit.test_api_support import TEXT, make_harness

pytestmark = pytest.mark.integration

PERSISTENCE_OFF = "Redis persistence is off"


@pytest.fixture(scope="module")
def volatile_redis() -> Iterator[str]:
    """A Redis that keeps nothing on disk (no AOF, no RDB save points): unsafe on purpose."""
    server = RedisServer(appendonly=False).start()
    client = redis.Redis.from_url(server.url)
    assert client.config_get("save") == {"save": ""}
    client.close()
    yield server.url
    server.cleanup()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env={**os.environ, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_cli_send_and_status_do_not_warn(volatile_redis: str, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "DISPATCHER_REDIS_URL": volatile_redis}
    sent = cli(env, "send", "--type", "text", "--from", "u1", "--to", "u2", "--text", "hi")
    shown = cli(env, "status", sent.stdout.strip())
    for result in (sent, shown):
        assert "UNSAFE REDIS" not in result.stderr and PERSISTENCE_OFF not in result.stderr


def test_api_warns_once_at_start_up_and_readyz_lists_the_warning(
    volatile_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="dispatcher.health"):
        api = make_harness(volatile_redis, auth_enabled=False)  # runs the app's start-up
        try:
            assert api.http.get("/readyz").status_code == 200
            for _ in range(3):
                submitted = api.http.post("/sender/v1/handleBasicMessage", json=TEXT)
                assert submitted.status_code == 200, submitted.text
            ready = api.http.get("/readyz").json()["data"]
        finally:
            api.close()
    said = [r.getMessage() for r in caplog.records if PERSISTENCE_OFF in r.getMessage()]
    assert len(said) == 1, said
    assert "UNSAFE REDIS CONFIGURATION (api)" in said[0]
    assert any(PERSISTENCE_OFF in warning for warning in ready["warnings"]), ready


def test_readyz_has_no_warnings_for_a_safe_redis(redis_url: str) -> None:
    with RedisServer(appendonly=True) as safe:
        api = make_harness(redis_url, redis_url=safe.url)
        try:
            ready = api.http.get("/readyz").json()["data"]
        finally:
            api.close()
    assert ready == {"redis": "ok", "broker": "ok", "warnings": []}


def test_worker_warns_once_at_start_up(
    volatile_redis: str, worker_env: dict[str, str], tmp_path: Any
) -> None:
    env = {**worker_env, "DISPATCHER_REDIS_URL": volatile_redis}
    worker = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        cli(env, "send", "--type", "text", "--from", "u1", "--to", "u2", "--text", "hi")
    finally:
        worker.stop()
    assert worker.log().count(PERSISTENCE_OFF) == 1, worker.log()[-3000:]
