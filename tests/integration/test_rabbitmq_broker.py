"""RabbitMQ as the broker (docs/deployment.md): the HTTP API and a real worker on a quorum
queue of the session's own virtual host, the Easemob simulator on loopback; the status
store one Redis, or a 3-primary Redis Cluster (tests/cluster.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher import keys
from dispatcher.api.app import create_app
from dispatcher.api.paths import SUBMIT, SUBMIT_BATCH
from dispatcher.errors import Unavailable
from dispatcher.sandbox.server import ServerThread
from tests.cluster import RedisClusterSet
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, ROOT, settings_from_env, wait_for_state
from tests.rabbitmq import RabbitVhost, rabbitmqctl

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


def text(message_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "messageType": 1,
        "from": "u1",
        "to": "u2",
        "messageInfo": {"textMessage": "over RabbitMQ"},
    }
    if message_id:
        message["getMessageId"] = message_id
    return message


@pytest.fixture(params=["redis", "cluster"])
def worker_env(
    request: pytest.FixtureRequest, worker_env: dict[str, str], rabbitmq: RabbitVhost
) -> Iterator[dict[str, str]]:
    env = {**worker_env, "DISPATCHER_BROKER_URL": rabbitmq.url}
    if request.param == "cluster":
        cluster: RedisClusterSet = request.getfixturevalue("redis_cluster")
        cluster.flush()
        env["DISPATCHER_REDIS_URL"] = cluster.url
        env["DISPATCHER_DELIVERY_BATCH"] = "0"  # the doorbell is refused with a cluster store
    yield env
    rabbitmq.delete_queue(worker_env["DISPATCHER_QUEUE"])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_api_submit_is_delivered_through_a_quorum_queue(
    worker_env: dict[str, str], dispatcher: Any, easemob: Any, start_worker: Any, rabbitmq: Any
) -> None:
    early = [dispatcher.submit(text()) for _ in range(2)]  # before any worker runs
    (backlog,) = dispatcher.queue_backlog()
    assert (backlog.queue, backlog.depth) == (worker_env["DISPATCHER_QUEUE"], 2)
    # Confirmed by the broker, so marked published: recovery waits the queued grace.
    now_ms = time.time() * 1000
    for message_id in early:
        member = dispatcher.ref(message_id).member
        deadline = dispatcher.redis.zscore(keys.shard_of(member).inflight, member)
        assert deadline is not None and deadline > now_ms + 200_000, "queued grace (300 s)"
    start_worker()
    settings = settings_from_env({**worker_env, "DISPATCHER_AUTH_ENABLED": "false"})
    with ServerThread(create_app(settings)) as server:
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        assert ready.json()["data"]["broker"] == "ok"
        ids = []
        for _ in range(5):
            answer = httpx.post(f"{server.url}{SUBMIT}", json=text(), timeout=10)
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["data"]["getMessageId"])
        batch = httpx.post(
            f"{server.url}{SUBMIT_BATCH}", json={"messages": [text() for _ in range(3)]}, timeout=10
        )
        assert batch.status_code == 200, batch.text
        ids += [result["getMessageId"] for result in batch.json()["data"]["results"]]
        records = [wait_for_state(dispatcher, m) for m in early + ids]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert [r.state.value for r in records] == ["delivered"] * 10
    assert len(easemob.requests(MESSAGES_PATH)) == 10
    assert "dispatcher_broker_up 1.0" in metrics
    assert f'dispatcher_queue_depth{{queue="{settings.queue}"}} 0.0' in metrics
    if rabbitmq.private:  # the queue's type is only visible to the broker's operator
        listed = rabbitmqctl("list_queues", "-p", rabbitmq.vhost, "name", "type")
        assert f"{settings.queue}\tquorum" in listed, listed


_DIES_BEFORE_PUBLISHING = """
import os, sys
from dispatcher import Dispatcher
from dispatcher.doorbell import Doorbell
Dispatcher.publish = lambda *args, **kwargs: os._exit(9)  # killed between record and publish
Doorbell.publish = lambda *args, **kwargs: os._exit(9)  # (of its ring, with the doorbell)
Dispatcher.from_env().submit({"messageType": 1, "from": "u1", "to": "u2",
    "messageInfo": {"textMessage": "outbox"}, "getMessageId": sys.argv[1]})
"""


def test_a_producer_killed_between_record_and_publish_leaves_it_to_recovery(
    worker_env: dict[str, str], dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    """The record-then-publish outbox: the record's short deadline (the publish grace) is
    never moved on by a confirmation, so the reaper publishes it; delivered once. With the
    doorbell the message waits at the head of its lane's pending list with no ring
    published: the reaper rings the lane once the flag expires (docs/architecture.md,
    "The doorbell")."""
    grace = 3
    message_id = "outbox" + str(time.monotonic_ns())
    env = {**os.environ, **worker_env, "DISPATCHER_PUBLISH_GRACE": str(grace)}
    died = subprocess.run(
        [sys.executable, "-c", _DIES_BEFORE_PUBLISHING, message_id],
        env=env, cwd=ROOT, capture_output=True, timeout=60,
    )  # fmt: skip
    assert died.returncode == 9, died.stderr.decode()[-2000:]
    recorded = dispatcher.status(message_id)
    assert recorded is not None and recorded.state.value == "queued"
    recorded_at = time.monotonic()
    start_worker(publish_grace=grace, reaper_interval=1)
    record = wait_for_state(dispatcher, message_id, timeout=grace + 30)
    took = time.monotonic() - recorded_at
    assert record.state.value == "delivered"
    if not settings_from_env(worker_env).delivery_batch:
        assert any("recovery: re-enqueued" in (h.detail or "") for h in record.history)
    assert took < grace + 25, "published after the publish grace, not the queued grace"
    assert len(easemob.requests(MESSAGES_PATH)) == 1


def test_broker_down_the_api_starts_refuses_submits_and_keeps_no_record(
    worker_env: dict[str, str], dispatcher: Any
) -> None:
    down = f"amqp://guest:guest@127.0.0.1:{closed_port()}//"
    settings = settings_from_env(
        {**worker_env, "DISPATCHER_BROKER_URL": down, "DISPATCHER_AUTH_ENABLED": "false"}
    )
    with ServerThread(create_app(settings)) as server:
        started = time.monotonic()
        ready = httpx.get(f"{server.url}/readyz", timeout=10)
        probed_in = time.monotonic() - started
        answer = httpx.post(f"{server.url}{SUBMIT}", json=text("brokerdown1"), timeout=30)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert ready.status_code == 503, ready.text
    assert ready.json()["data"] == {"redis": "ok", "broker": "unreachable"}
    assert probed_in < 5
    assert answer.status_code == 503, answer.text
    assert dispatcher.status("brokerdown1") is None, "a refused submit leaves no record"
    assert "dispatcher_broker_up 0.0" in metrics
    from dispatcher import Dispatcher

    producer = Dispatcher(settings)
    try:
        with pytest.raises(Unavailable):
            producer.submit(text("brokerdown2"))
        with pytest.raises(Unavailable, match="broker unavailable"):
            producer.queue_backlog()
    finally:
        producer.close()
    assert dispatcher.status("brokerdown2") is None
