"""Fixtures of the fault suite (docs/reliability.md, "The harness").

- ``fault_redis``: a ``redis-server`` of this test module's own (own port, own
  data dir, AOF on); a module overrides ``redis_options`` for e.g. maxmemory.
  Each test gets it running and flushed (``redis_server``); a test that killed
  it gets it restarted afterwards.
- ``easemob``: an Easemob simulator of this test's own (fresh rate windows and
  tokens), wrapped in a :class:`ReceiptLedger`; ``make_easemob`` for other limits.
- ``start_worker``: worker processes with recorded PIDs, at most four at once.
- ``fault_env`` / ``dispatcher``: short leases and reaper intervals, so recovery
  is measured in seconds; ``broker``: Redis, or RabbitMQ for a test marked
  ``BOTH_BROKERS`` (a virtual host of the session's own, tests/rabbitmq.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from dispatcher.api.paths import SUBMIT
from dispatcher.embedded import RedisServer
from dispatcher.sandbox.easemob import create_easemob_app
from dispatcher.sandbox.server import ServerThread
from tests.conftest import (
    EASEMOB_APP,
    EASEMOB_CLIENT_ID,
    EASEMOB_CLIENT_SECRET,
    EASEMOB_ORG,
    base_env,
    settings_from_env,
)
from tests.fault.harness import MAX_WORKERS, Easemob, FaultWorker, ReceiptLedger

FAULT_SETTINGS = {
    "DISPATCHER_LEASE_SECONDS": "5",
    "DISPATCHER_REAPER_INTERVAL": "1",
    "DISPATCHER_QUEUED_GRACE": "15",
    "DISPATCHER_RETRY_GRACE": "5",
    "DISPATCHER_EASEMOB_TIMEOUT": "2",
    "DISPATCHER_SHUTDOWN_GRACE": "10",
    "DISPATCHER_WORKER_CONCURRENCY": "8",
    "DISPATCHER_BACKOFF_BASE": "0.05",
    "DISPATCHER_BACKOFF_CAP": "0.5",
    "DISPATCHER_MEMORY_CHECK_INTERVAL": "0.5",
}


@pytest.fixture(scope="module")
def redis_options() -> dict[str, Any]:
    """Extra ``RedisServer`` arguments for this module's server (override per module)."""
    return {}


@pytest.fixture(scope="module")
def fault_redis(
    tmp_path_factory: pytest.TempPathFactory, redis_options: dict[str, Any]
) -> Iterator[RedisServer]:
    options = {"appendonly": True, **redis_options}
    server = RedisServer(data_dir=tmp_path_factory.mktemp("redis"), **options).start()
    yield server
    server.cleanup()


def ensure_running(server: RedisServer) -> None:
    if server.process is None or server.process.poll() is not None:
        server.start()


@pytest.fixture()
def redis_server(fault_redis: RedisServer) -> Iterator[RedisServer]:
    ensure_running(fault_redis)
    client = redis.Redis.from_url(fault_redis.url)
    client.flushall()
    client.close()
    yield fault_redis
    ensure_running(fault_redis)


@pytest.fixture()
def make_easemob() -> Iterator[Callable[..., Easemob]]:
    servers: list[ServerThread] = []

    def make(**limits: Any) -> Easemob:
        app = create_easemob_app(
            org=EASEMOB_ORG,
            app=EASEMOB_APP,
            client_id=EASEMOB_CLIENT_ID,
            client_secret=EASEMOB_CLIENT_SECRET,
            **limits,
        )
        ledger = ReceiptLedger(app)
        server = ServerThread(ledger).start()
        servers.append(server)
        return Easemob(server.url, app, ledger)

    yield make
    for server in servers:
        server.stop()


@pytest.fixture()
def easemob(make_easemob: Callable[..., Easemob]) -> Easemob:
    """A fresh simulator with the provider's 2022+ limits (100 calls/s, 6000 msgs/min)."""
    return make_easemob()


@pytest.fixture()
def broker(request: pytest.FixtureRequest) -> str:
    """The test's broker: the fault Redis itself, or RabbitMQ where a test is parametrised
    with :data:`tests.fault.harness.BOTH_BROKERS`."""
    return str(getattr(request, "param", "redis"))


@pytest.fixture()
def fault_env(
    redis_server: RedisServer, easemob: Easemob, broker: str, request: pytest.FixtureRequest
) -> Iterator[dict[str, str]]:
    env = base_env(redis_server.url, easemob.url, None)
    env.update(FAULT_SETTINGS)
    env["DISPATCHER_QUEUE"] = f"fault-{uuid.uuid4().hex[:12]}"
    rabbitmq = request.getfixturevalue("rabbitmq") if broker == "amqp" else None
    if rabbitmq is not None:
        env["DISPATCHER_BROKER_URL"] = rabbitmq.url
    yield env
    if rabbitmq is not None:
        rabbitmq.delete_queue(env["DISPATCHER_QUEUE"])


@pytest.fixture()
def start_worker(fault_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., FaultWorker]]:
    """``start_worker(*celery_args, wait_ready=True, **DISPATCHER_overrides)``."""
    started: list[FaultWorker] = []

    def start(*extra_args: str, wait_ready: bool = True, **overrides: Any) -> FaultWorker:
        running = [w for w in started if w.alive()]
        assert len(running) < MAX_WORKERS, "the fault suite runs at most 4 workers at once"
        env = dict(fault_env)
        env.update({f"DISPATCHER_{k.upper()}": str(v) for k, v in overrides.items()})
        worker = FaultWorker(env, tmp_path / f"worker-{len(started)}.log", list(extra_args))
        started.append(worker)
        return worker.start(wait_ready=wait_ready)

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture()
def dispatcher(fault_env: dict[str, str]) -> Iterator[Any]:
    from dispatcher import Dispatcher

    d = Dispatcher(settings_from_env(fault_env))
    yield d
    d.close()


@dataclass
class Api:
    """The HTTP API of this test, served by uvicorn in a thread (auth off: faults, not signing)."""

    url: str
    app: Any

    @property
    def health(self) -> Any:
        """The API's memory gate (:class:`dispatcher.health.RedisHealth`)."""
        return self.app.state.runtime.dispatcher.health

    def submit(self, payload: dict[str, Any], timeout: float = 10.0) -> httpx.Response:
        return httpx.post(f"{self.url}{SUBMIT}", json=payload, timeout=timeout)


@pytest.fixture()
def api(fault_env: dict[str, str]) -> Iterator[Api]:
    from dispatcher.api import create_app

    settings = settings_from_env({**fault_env, "DISPATCHER_AUTH_ENABLED": "false"})
    app = create_app(settings)
    with ServerThread(app) as server:
        yield Api(server.url, app)
