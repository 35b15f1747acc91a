"""Status webhooks end to end (docs/webhooks.md): real Redis, worker processes, and a
receiver that verifies every request with the ``standardwebhooks`` library."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from dispatcher import keys
from dispatcher.config import ClientConfig
from dispatcher.producer import Dispatcher
from dispatcher.sandbox.server import ServerThread
from dispatcher.sandbox.webhook_receiver import create_webhook_receiver
from dispatcher.webhooks.outbox import WebhookStore
from tests.conftest import WorkerProcess, outbox_keys, settings_from_env, wait_for_state

pytestmark = pytest.mark.integration

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
CLIENT = "shop"
EVENTS = ["message.delivered", "message.failed", "message.dead", "message.read"]
CALLBACK_SECRET = "easemob-callback-secret"


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


class Receiver:
    """The sandbox receiver on a fixed loopback port; can go down and come back."""

    def __init__(self) -> None:
        self.app = create_webhook_receiver([SECRET])
        self.server = ServerThread(self.app).start()
        self.port = self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> None:
        self.server.stop()

    def up(self) -> None:
        self.server = ServerThread(self.app, port=self.port).start()

    def verified(self) -> list[dict[str, Any]]:
        return list(self.app.state.received.snapshot()["verified"])

    def rejected(self) -> list[dict[str, Any]]:
        return list(self.app.state.received.snapshot()["rejected"])

    def fault(self, **rule: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=rule, timeout=5).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        entries = httpx.get(f"{self.url}/_sandbox/requests", timeout=5).json()
        return [e for e in entries if e["path"].startswith("/webhooks")]


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    instance = Receiver()
    yield instance
    instance.server.stop()


@pytest.fixture()
def webhook_env(
    worker_env: dict[str, str], receiver: Receiver, redis_client: redis.Redis
) -> dict[str, str]:
    for key in (*outbox_keys(), keys.WEBHOOK_DUE, keys.WEBHOOK_DEAD):
        redis_client.delete(key)
    for pattern in (keys.webhook_delivery("*"), keys.webhook_endpoint("*")):
        for key in redis_client.scan_iter(match=pattern):
            redis_client.delete(key)
    clients = {
        CLIENT: {
            "secret": "client-signing-secret",
            "webhooks": [
                {"url": f"{receiver.url}/webhooks/shop", "secret": SECRET, "events": EVENTS}
            ],
        }
    }
    return {
        **worker_env,
        "DISPATCHER_CLIENTS": json.dumps(clients),
        "DISPATCHER_WEBHOOK_QUEUE": f"hooks-{uuid.uuid4().hex[:12]}",
        "DISPATCHER_WEBHOOK_ALLOW_LOOPBACK": "true",
        "DISPATCHER_WEBHOOK_RETRY_SCHEDULE": "0,1,2,2,2,30",
        "DISPATCHER_WEBHOOK_POLL_INTERVAL": "0.1",
        "DISPATCHER_WEBHOOK_CLAIM_SECONDS": "5",
        "DISPATCHER_WEBHOOK_TIMEOUT": "3",
        "DISPATCHER_EASEMOB_CALLBACK_SECRET": CALLBACK_SECRET,
    }


@pytest.fixture()
def producer(webhook_env: dict[str, str]) -> Iterator[Dispatcher]:
    plain = {k: v for k, v in webhook_env.items() if k != "DISPATCHER_CLIENTS"}
    settings = settings_from_env(plain)
    clients = {
        name: ClientConfig.model_validate(config)
        for name, config in json.loads(webhook_env["DISPATCHER_CLIENTS"]).items()
    }
    d = Dispatcher(settings.model_copy(update={"clients": clients}))
    yield d
    d.close()


@pytest.fixture()
def workers(webhook_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        env = {**webhook_env, **{f"DISPATCHER_{k.upper()}": v for k, v in overrides.items()}}
        queues = f"{env['DISPATCHER_QUEUE']},{env['DISPATCHER_WEBHOOK_QUEUE']}"
        worker = WorkerProcess(env, tmp_path / f"worker-{len(started)}.log", ["-Q", queues])
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


def text_message() -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "u1",
        "to": "u2",
        "messageInfo": {"textMessage": "hello"},
        "getMessageId": "w" + uuid.uuid4().hex,
    }


def endpoint_health(producer: Dispatcher) -> dict[str, str]:
    store = WebhookStore(producer.redis)
    endpoint = producer.settings.clients[CLIENT].webhooks[0].endpoint_id(CLIENT)
    return store.endpoint_health(endpoint)


def test_a_receiver_down_for_a_while_gets_every_event_once_after_dedupe(
    producer: Dispatcher, receiver: Receiver, workers: Callable[..., WorkerProcess]
) -> None:
    workers()
    receiver.down()
    ids = [producer.submit(text_message(), client=CLIENT) for _ in range(3)]
    for message_id in ids:
        assert wait_for_state(producer, message_id).state == "delivered"
    # Attempts on the schedule (0, 1, 2 s): three failures of each delivery, spaced.
    attempts: dict[str, list[int]] = {}

    def three_attempts_each() -> bool:
        for member in producer.redis.zrange(keys.WEBHOOK_DUE, 0, -1):
            fields = producer.redis.hmget(
                keys.webhook_delivery(member.decode()), "attempts", "lastAttemptAt"
            )
            if fields[0] and fields[1]:
                seen = attempts.setdefault(member.decode(), [])
                if not seen or seen[-1] != int(fields[1]):
                    seen.append(int(fields[1]))
        return len(attempts) == 3 and all(len(t) >= 3 for t in attempts.values())

    wait_until(three_attempts_each, 30, "three failed attempts per delivery")
    for times in attempts.values():
        assert times[1] - times[0] >= 900, times
        assert times[2] - times[1] >= 1900, times
    health = endpoint_health(producer)
    assert int(health["failures"]) >= 9 and "ConnectError" in health["lastError"]
    receiver.up()
    wait_until(lambda: len({e["webhookId"] for e in receiver.verified()}) == 3, 30, "3 events")
    time.sleep(1.0)  # a late duplicate would show up here
    got = {e["webhookId"]: e["payload"] for e in receiver.verified()}
    assert len(got) == 3 and not receiver.rejected()
    assert sorted(p["data"]["getMessageId"] for p in got.values()) == sorted(ids)
    for payload in got.values():
        assert payload["type"] == "message.delivered"
        assert payload["data"]["state"] == "delivered"
        assert payload["data"]["attempts"] == 1
        assert payload["data"]["providerMessageId"]
        assert SECRET not in json.dumps(payload)
    assert producer.redis.zcard(keys.WEBHOOK_DUE) == 0


def test_410_disables_the_endpoint_and_its_dead_letters_replay_once_enabled(
    producer: Dispatcher,
    receiver: Receiver,
    workers: Callable[..., WorkerProcess],
    webhook_env: dict[str, str],
) -> None:
    workers()
    receiver.fault(path="/webhooks", status=410, body={"error": "gone"})
    first = producer.submit(text_message(), client=CLIENT)
    wait_until(lambda: endpoint_health(producer).get("disabled"), 30, "endpoint disabled")
    assert "410" in endpoint_health(producer)["disabled"]
    store = WebhookStore(producer.redis)
    wait_until(lambda: store.dead_letters(), 10, "the 410'd event dead-lettered")
    calls = len(receiver.requests())
    second = producer.submit(text_message(), client=CLIENT)
    wait_for_state(producer, second)
    wait_until(lambda: len(store.dead_letters()) == 2, 30, "second event dead-lettered")
    letters = {d.summary()["getMessageId"]: d for d in store.dead_letters()}
    assert set(letters) == {first, second}
    assert "endpoint disabled" in (letters[second].last_error or "")
    assert len(receiver.requests()) == calls  # nothing more was sent to it

    # Fixed and enabled again, the dead letters are replayed with their webhook ids.
    httpx.delete(f"{receiver.url}/_sandbox/faults", timeout=5).raise_for_status()
    endpoint = producer.settings.clients[CLIENT].webhooks[0].endpoint_id(CLIENT)
    env = {**os.environ, **webhook_env}
    for args in (["enable", endpoint], ["replay", "--all"]):
        run = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", "webhooks", *args],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    assert "disabled" not in endpoint_health(producer)
    wait_until(lambda: len(receiver.verified()) == 2, 30, "both events after the replay")
    got = {e["webhookId"]: e["payload"]["data"]["getMessageId"] for e in receiver.verified()}
    assert got == {d.webhook_id: message_id for message_id, d in letters.items()}
    assert store.dead_letters() == []


def test_loopback_is_refused_unless_allowed(
    producer: Dispatcher, receiver: Receiver, workers: Callable[..., WorkerProcess]
) -> None:
    workers(webhook_allow_loopback="false")
    message_id = producer.submit(text_message(), client=CLIENT)
    wait_for_state(producer, message_id)
    wait_until(lambda: endpoint_health(producer).get("lastError"), 30, "a refused attempt")
    assert "loopback" in endpoint_health(producer)["lastError"]
    assert receiver.requests() == []


def test_a_webhook_worker_killed_mid_send_loses_no_event(
    producer: Dispatcher, receiver: Receiver, workers: Callable[..., WorkerProcess]
) -> None:
    receiver.fault(path="/webhooks", latency=30, times=1)
    first = workers()
    message_id = producer.submit(text_message(), client=CLIENT)
    wait_for_state(producer, message_id)
    wait_until(lambda: receiver.requests(), 30, "the first webhook request in flight")
    os.kill(first.pid, signal.SIGKILL)
    first.process.wait()  # type: ignore[union-attr]
    workers()
    wait_until(lambda: receiver.verified(), 30, "the event after the kill")
    payloads = {e["webhookId"]: e["payload"] for e in receiver.verified()}
    assert len(payloads) == 1
    assert next(iter(payloads.values()))["data"]["getMessageId"] == message_id


@pytest.fixture()
def api_server(producer: Dispatcher) -> Iterator[str]:
    from dispatcher.api.app import create_app

    with ServerThread(create_app(producer.settings, producer)) as server:
        yield server.url


@pytest.fixture()
def easemob_callbacks(easemob: Any) -> Iterator[Callable[..., None]]:
    def configure(**rule: Any) -> None:
        url = f"{easemob.url}/_sandbox/easemob/callbacks"
        httpx.put(url, json=rule, timeout=5).raise_for_status()

    yield configure
    configure(url=None)


def test_easemob_callbacks_reach_the_client_as_read_at_and_message_read(
    producer: Dispatcher,
    receiver: Receiver,
    workers: Callable[..., WorkerProcess],
    api_server: str,
    easemob: Any,
    easemob_callbacks: Callable[..., None],
) -> None:
    from dispatcher.channels.easemob.callbacks import CALLBACKS

    easemob_callbacks(
        url=api_server + CALLBACKS, secret=CALLBACK_SECRET, offline_users=["u2"], read_after=0.3
    )
    workers()
    message_id = producer.submit(text_message(), client=CLIENT)
    wait_for_state(producer, message_id)
    types = lambda: {e["payload"]["type"] for e in receiver.verified()}  # noqa: E731
    wait_until(lambda: types() == {"message.delivered", "message.read"}, 30, "both events")
    record = producer.status(message_id)
    assert record is not None and record.readAt is not None
    details = [h.detail for h in record.history]
    assert "Easemob receipt: chat_offline" in details and "Easemob receipt: read" in details
    [read] = [e["payload"] for e in receiver.verified() if e["payload"]["type"] == "message.read"]
    assert read["data"]["getMessageId"] == message_id and read["data"]["readAt"]
    sent = httpx.get(f"{easemob.url}/_sandbox/easemob/callbacks", timeout=5).json()["sent"]
    assert {s["status"] for s in sent} == {200}
