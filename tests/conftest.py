"""Shared fixtures: a real Redis, the simulators over loopback HTTP, worker processes.

Redis: the machine's on 127.0.0.1:6379 when it answers (database 12 is the
tests' own and is flushed), else a server of the session's own on a free port.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from dispatcher import keys
from dispatcher.config import Settings
from dispatcher.embedded import RedisServer, free_port, redis_answers
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from tests.cluster import RedisClusterSet
from tests.rabbitmq import RabbitVhost, amqp_answers, configured_amqp

EASEMOB_ORG = "sandbox-org"
EASEMOB_APP = "dispatcher"
EASEMOB_CLIENT_ID = "sandbox-client-id"
EASEMOB_CLIENT_SECRET = "sandbox-client-secret"
QINIU_ACCESS_KEY = "sandbox-access-key"
QINIU_SECRET_KEY = "sandbox-secret-key"
QINIU_BUCKET = "sandbox-bucket"
TEST_DB = 12
ROOT = Path(__file__).resolve().parent.parent


def ref(message_id: str) -> MessageRef:
    """The reference of a message submitted in the default namespace."""
    return MessageRef(DEFAULT_NAMESPACE, message_id)


def rejected_entries(client: redis.Redis) -> list[dict[str, Any]]:
    """Every shard's rejected trace (dispatcher/keys.py), newest first."""
    entries = [json.loads(raw) for s in keys.shards() for raw in client.lrange(s.rejected, 0, -1)]
    return sorted(entries, key=lambda e: -int(e["at"]))


def outbox_keys() -> list[str]:
    return [s.outbox for s in keys.shards()]


def outbox_events(client: redis.Redis) -> list[dict[str, Any]]:
    """Every shard's webhook outbox events, oldest first."""
    events = [json.loads(raw) for key in outbox_keys() for raw in client.lrange(key, 0, -1)]
    return sorted(events, key=lambda e: int(e["at"]))


def stats_keys() -> list[str]:
    return [s.stats for s in keys.shards()]


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The machine's Redis on 127.0.0.1:6379 (database 12, flushed) when it answers.

    Otherwise, or with ``DISPATCHER_TEST_REDIS=embedded`` (for test runs in
    parallel on one machine, which must not share queues and tokens), a server
    of this session's own on a free loopback port. Any other value is a URL.
    """
    choice = os.environ.get("DISPATCHER_TEST_REDIS", "redis://127.0.0.1:6379")
    server: RedisServer | None = None
    if choice != "embedded" and redis_answers(choice):
        url = f"{choice.rstrip('/')}/{TEST_DB}"
    else:
        server = RedisServer(appendonly=False).start()
        url = server.url
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url
    if server is not None:
        server.cleanup()


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitVhost]:
    """A RabbitMQ virtual host of this session's own (tests/rabbitmq.py says where from);
    skipped, with the reason in the summary, when no broker answers and none was required."""
    url, required = configured_amqp()
    if not amqp_answers(url):
        where = urlsplit(url).netloc.rsplit("@", 1)[-1]
        if required:
            pytest.fail(f"DISPATCHER_TEST_AMQP names RabbitMQ at {where} and it does not answer")
        pytest.skip(f"RabbitMQ not answering on {where}: RabbitMQ broker tests not run")
    vhost = RabbitVhost.create(url)
    yield vhost
    vhost.delete()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    """A 3-primary Redis Cluster of this session's own on loopback (tests/cluster.py)."""
    with RedisClusterSet(root=tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(params=["single", "cluster"])
def store_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """An empty status store Redis: fakeredis, then a real 3-primary Redis Cluster (the
    store's tests run against both)."""
    if request.param == "single":
        import fakeredis

        yield fakeredis.FakeRedis()
        return
    cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
    cluster.flush()
    # Left open: a store's timers (attempt durations) may still write after the test.
    yield cluster.client()  # type: ignore[misc]


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@dataclass
class Simulator:
    url: str
    app: Any

    def requests(self, path_contains: str = "") -> list[dict[str, Any]]:
        entries = httpx.get(f"{self.url}/_sandbox/requests", timeout=10).json()
        return [e for e in entries if path_contains in e["path"]]

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/requests", timeout=10).raise_for_status()
        httpx.delete(f"{self.url}/_sandbox/faults", timeout=10).raise_for_status()

    def fault(self, **rule: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=rule, timeout=10).raise_for_status()


@pytest.fixture(scope="session")
def easemob_sim() -> Iterator[Simulator]:
    from dispatcher.sandbox.easemob import create_easemob_app
    from dispatcher.sandbox.server import ServerThread

    app = create_easemob_app(
        org=EASEMOB_ORG,
        app=EASEMOB_APP,
        client_id=EASEMOB_CLIENT_ID,
        client_secret=EASEMOB_CLIENT_SECRET,
    )
    with ServerThread(app) as server:
        yield Simulator(server.url, app)


@pytest.fixture()
def easemob(easemob_sim: Simulator) -> Simulator:
    """The session's Easemob simulator with an empty ledger and no faults."""
    easemob_sim.clear()
    return easemob_sim


@pytest.fixture(scope="session")
def qiniu_sim_session() -> Iterator[Simulator]:
    from dispatcher.sandbox.qiniu import create_qiniu_app
    from dispatcher.sandbox.server import ServerThread

    app = create_qiniu_app(
        access_key=QINIU_ACCESS_KEY, secret_key=QINIU_SECRET_KEY, bucket=QINIU_BUCKET
    )
    with ServerThread(app) as server:
        yield Simulator(server.url, app)


@pytest.fixture()
def qiniu_sim(qiniu_sim_session: Simulator) -> Simulator:
    """The session's Qiniu simulator with an empty ledger and no faults."""
    qiniu_sim_session.clear()
    return qiniu_sim_session


def base_env(redis_url: str, easemob_url: str, qiniu_url: str | None) -> dict[str, str]:
    env = {
        "DISPATCHER_REDIS_URL": redis_url,
        "DISPATCHER_EASEMOB_BASE_URL": easemob_url,
        "DISPATCHER_EASEMOB_ORG": EASEMOB_ORG,
        "DISPATCHER_EASEMOB_APP": EASEMOB_APP,
        "DISPATCHER_EASEMOB_CLIENT_ID": EASEMOB_CLIENT_ID,
        "DISPATCHER_EASEMOB_CLIENT_SECRET": EASEMOB_CLIENT_SECRET,
        "DISPATCHER_BACKOFF_BASE": "0.05",
        "DISPATCHER_BACKOFF_CAP": "0.5",
        "DISPATCHER_EASEMOB_TIMEOUT": "3",
        "DISPATCHER_LEASE_SECONDS": "15",
    }
    if qiniu_url:
        env.update(
            {
                "DISPATCHER_QINIU_ACCESS_KEY": QINIU_ACCESS_KEY,
                "DISPATCHER_QINIU_SECRET_KEY": QINIU_SECRET_KEY,
                "DISPATCHER_QINIU_BUCKET": QINIU_BUCKET,
                "DISPATCHER_QINIU_DOMAIN": qiniu_url,
                "DISPATCHER_QINIU_UP_HOST": qiniu_url,
                "DISPATCHER_QINIU_RS_HOST": qiniu_url,
            }
        )
    return env


def settings_from_env(env: dict[str, str]) -> Settings:
    values = {k.removeprefix("DISPATCHER_").lower(): v for k, v in env.items()}
    return Settings(**values)


@dataclass
class WorkerProcess:
    """A real ``celery -A dispatcher.worker worker`` child with its PID recorded."""

    env: dict[str, str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    name_prefix: ClassVar[str] = "test"
    quiet_args: ClassVar[tuple[str, ...]] = (
        "--without-heartbeat",
        "--without-mingle",
        "--without-gossip",
    )
    """Start-up shortcuts of test workers; a worker watched by Flower keeps its heartbeat."""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, *, wait_ready: bool = True, timeout: float = 30.0) -> Self:
        command = [
            sys.executable, "-m", "celery", "-A", "dispatcher.worker", "worker",
            "-Q", self.env["DISPATCHER_QUEUE"],
            "-n", f"{self.name_prefix}-{uuid.uuid4().hex[:8]}@%h",
            *self.quiet_args, "-l", "INFO", *self.extra_args,
        ]  # fmt: skip
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        if wait_ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 30.0) -> Self:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited at start:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"worker not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class ApiProcess:
    """``dispatcher api`` in a child process of its own, on a free loopback port."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(
        cls, env: dict[str, str], log_path: Path, timeout: float = 60.0, workers: int = 1
    ) -> ApiProcess:
        """Start it with ``env`` (on top of this process's) and wait until /healthz answers."""
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "dispatcher.cli", "api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
                env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        server = cls(f"http://127.0.0.1:{port}", process, log_path)
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"dispatcher api exited:\n{server.log()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                server.stop()
                raise TimeoutError(f"dispatcher api not up in {timeout} s:\n{server.log()[-3000:]}")
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture()
def worker_env(redis_url: str, easemob: Simulator, qiniu_sim: Simulator) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter(match=keys.media_cache("*", "*")):
        client.delete(key)  # tests place the same keys with other metadata
    client.close()
    env = base_env(redis_url, easemob.url, qiniu_sim.url)
    env["DISPATCHER_QUEUE"] = f"test-{uuid.uuid4().hex[:12]}"
    return env


@pytest.fixture()
def start_worker(
    worker_env: dict[str, str], tmp_path: Path
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker processes on this test's queue; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(*extra_args: str, **overrides: str) -> WorkerProcess:
        env = dict(worker_env)
        env.update({f"DISPATCHER_{k.upper()}": str(v) for k, v in overrides.items()})
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", list(extra_args))
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture()
def dispatcher(worker_env: dict[str, str]) -> Iterator[Any]:
    from dispatcher import Dispatcher

    d = Dispatcher(settings_from_env(worker_env))
    yield d
    d.close()


def wait_for_state(
    dispatcher: Any, message_id: str, states: set[str] | None = None, timeout: float = 30.0
) -> Any:
    """Poll the status store until the message reaches one of ``states`` (default: terminal)."""
    wanted = states or {"delivered", "failed", "dead"}
    deadline = time.monotonic() + timeout
    record = None
    while time.monotonic() < deadline:
        record = dispatcher.status(message_id)
        if record is not None and record.state.value in wanted:
            return record
        time.sleep(0.05)
    raise AssertionError(f"{message_id} did not reach {wanted} in {timeout}s; last: {record}")
