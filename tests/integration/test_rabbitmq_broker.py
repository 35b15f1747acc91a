"""RabbitMQ as the broker (docs/deployment.md): the HTTP API and a real worker on a quorum
queue of the session's own virtual host, the Easemob simulator on loopback."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher.api.app import create_app
from dispatcher.api.paths import SUBMIT
from dispatcher.errors import Unavailable
from dispatcher.sandbox.server import ServerThread
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, ref, settings_from_env, wait_for_state
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


@pytest.fixture()
def worker_env(worker_env: dict[str, str], rabbitmq: RabbitVhost) -> Iterator[dict[str, str]]:
    yield {**worker_env, "DISPATCHER_BROKER_URL": rabbitmq.url}
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
        records = [wait_for_state(dispatcher, m) for m in early + ids]
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert [r.state.value for r in records] == ["delivered"] * 7
    assert len(easemob.requests(MESSAGES_PATH)) == 7
    assert "dispatcher_broker_up 1.0" in metrics
    assert f'dispatcher_queue_depth{{queue="{settings.queue}"}} 0.0' in metrics
    if rabbitmq.private:  # the queue's type is only visible to the broker's operator
        listed = rabbitmqctl("list_queues", "-p", rabbitmq.vhost, "name", "type")
        assert f"{settings.queue}\tquorum" in listed, listed


def test_recorded_but_never_published_message_is_published_by_recovery(
    worker_env: dict[str, str], easemob: Any, start_worker: Any
) -> None:
    from dispatcher import Dispatcher

    grace = 3
    settings = settings_from_env(
        {**worker_env, "DISPATCHER_QUEUED_GRACE": str(grace), "DISPATCHER_REAPER_INTERVAL": "1"}
    )
    producer = Dispatcher(settings)
    try:
        # The producer died between recording and publishing: only the record exists.
        message = producer.validate(text())
        message_id = "outbox" + str(time.monotonic_ns())
        call = producer.store.submit.prepare(
            ref(message_id), message.model_copy(update={"getMessageId": message_id}),
            channel="easemob",
        )  # fmt: skip
        assert producer.store.submit.create(call).outcome.value == "created"
        recorded_at = time.monotonic()
        start_worker(queued_grace=grace, reaper_interval=1)
        record = wait_for_state(producer, message_id, timeout=grace + 30)
        took = time.monotonic() - recorded_at
    finally:
        producer.close()
    assert record.state.value == "delivered"
    assert any("recovery: re-enqueued" in (h.detail or "") for h in record.history)
    assert took >= grace, "published only after the queued grace"
    assert len([r for r in easemob.requests(MESSAGES_PATH)]) == 1


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
