"""Flower, run as docs/operations.md says, sees a real worker and the deliveries it makes.

The worker starts as shipped, with task events off; Flower turns them on over Celery's
remote control, so it needs nothing from dispatcher's configuration. Heartbeats (worker
events) are on as shipped, so Flower also knows the worker is online.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx
import pytest

from dispatcher.embedded import free_port
from dispatcher.worker import DELIVER_TASK
from tests.conftest import EASEMOB_CLIENT_SECRET, ROOT, WorkerProcess, wait_for_state

pytestmark = pytest.mark.integration

T = TypeVar("T")
USER = "ops"


class ShippedWorker(WorkerProcess):
    """A worker that sends heartbeats once events are on, as ``dispatcher worker`` does."""

    name_prefix: ClassVar[str] = "flower"
    quiet_args: ClassVar[tuple[str, ...]] = ("--without-mingle", "--without-gossip")

    def name(self) -> str:
        found = re.search(r"(\S+@\S+) ready\.", self.log())
        assert found, self.log()[-2000:]
        return found.group(1)


class Flower:
    """``celery -A dispatcher.worker flower`` on a loopback port, behind basic auth."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.password = secrets.token_urlsafe(12)
        self.log_path = log_path
        command = [
            sys.executable, "-m", "celery", "-A", "dispatcher.worker", "flower",
            "--address=127.0.0.1", f"--port={self.port}",
            f"--basic_auth={USER}:{self.password}",
            "--inspect_timeout=5000",  # a loaded machine answers inspect slowly
        ]  # fmt: skip
        clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, env={**clean, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}", auth=(USER, self.password), timeout=15
        )

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        def answers() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"flower exited:\n{self.log()[-3000:]}")
            try:
                return self.http.get("/healthcheck").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, timeout, lambda: self.log()[-3000:])

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_until(
    check: Callable[[], T | None], timeout: float, explain: Callable[[], str] = lambda: ""
) -> T:
    """``check()``'s first truthy answer, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.2)
    raise AssertionError(f"not seen in {timeout}s: {explain()}")


@pytest.fixture()
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[ShippedWorker]:
    process = ShippedWorker(worker_env, tmp_path / "worker.log").start()
    yield process
    process.stop()


@pytest.fixture()
def flower(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Flower]:
    process = Flower(worker_env, tmp_path / "flower.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_flower_sees_the_worker_and_a_delivered_task(
    worker: ShippedWorker, flower: Flower, dispatcher: Any, worker_env: dict[str, str]
) -> None:
    name = worker.name()

    # Online in Flower's event state: worker heartbeats are sent with task events off.
    wait_until(
        lambda: flower.get("/api/workers", status="true").get(name),
        60,
        lambda: f"{flower.get('/api/workers', status='true')}\n{flower.log()[-2000:]}",
    )
    # Task events are off as shipped; Flower turns them on (every few seconds, for new workers).
    wait_until(lambda: "enabled by remote" in worker.log(), 60, lambda: worker.log()[-2000:])

    listed = wait_until(
        lambda: flower.get("/api/workers", refresh="1", workername=name).get(name),
        60,
        lambda: flower.log()[-2000:],
    )
    assert DELIVER_TASK in listed["registered"]
    assert worker_env["DISPATCHER_QUEUE"] in [q["name"] for q in listed["active_queues"]]

    message_id = "fl" + uuid.uuid4().hex
    dispatcher.submit(
        {
            "messageType": 1,
            "from": "u1",
            "to": "u2",
            "messageInfo": {"textMessage": "seen by flower"},
            "getMessageId": message_id,
        }
    )
    assert wait_for_state(dispatcher, message_id).state == "delivered"

    def delivered_task() -> dict[str, Any] | None:
        tasks = flower.get("/api/tasks", taskname=DELIVER_TASK, workername=name)
        return next(
            (t for t in tasks.values() if message_id in t["args"] and t["state"] == "SUCCESS"),
            None,
        )

    task = wait_until(delivered_task, 60, lambda: str(flower.get("/api/tasks")))
    assert task["worker"] == name
    assert task["result"] == "'delivered'"
    assert task["received"] <= task["started"] <= task["succeeded"]

    everything = flower.http.get("/api/workers").text + flower.http.get("/api/tasks").text
    assert EASEMOB_CLIENT_SECRET not in everything


def test_flower_api_refuses_callers_without_its_credentials(flower: Flower) -> None:
    anonymous = httpx.get(f"http://127.0.0.1:{flower.port}/api/workers", timeout=15)
    assert anonymous.status_code == 401
