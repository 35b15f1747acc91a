"""F14: queue messages that cannot be decoded or name an unknown id.

Such a message has no status record to move to ``dead``. Decision (README,
"Status and delivery"): the worker acks it once and keeps a trace in the
bounded ``dispatcher:rejected`` list (reason, detail, an excerpt) with a
``rejected:<reason>`` counter in the stats; it never loops and never stops the
worker. A message with a status record that keeps killing workers is the other
poison: the reaper dead-letters it after ``DISPATCHER_MAX_REQUEUES``.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Producer

from dispatcher import keys
from dispatcher.enqueue import DELIVER_TASK
from tests.conftest import ref, rejected_entries
from tests.fault.harness import assert_invariants, new_id, submit_texts, text_message

pytestmark = pytest.mark.fault


def raw_envelope(body: bytes, queue: str, content_type: str = "application/json") -> str:
    """A kombu Redis envelope as the transport stores it in the queue list."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {},
            "properties": {
                "body_encoding": "base64",
                "delivery_info": {"exchange": "", "routing_key": queue},
                "delivery_mode": 2,
                "delivery_tag": str(uuid.uuid4()),
                "priority": 0,
            },
        }
    )


def wait_rejected(client: redis.Redis, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(rejected_entries(client)) >= count:
            break
        time.sleep(0.1)
    return rejected_entries(client)


def test_undecodable_and_unknown_queue_messages_are_rejected_once_with_a_reason(
    dispatcher: Any, easemob: Any, start_worker: Any, redis_server: Any
) -> None:
    worker = start_worker()
    queue = dispatcher.settings.queue
    client = redis.Redis.from_url(redis_server.url)
    unknown_id = new_id("ghost")

    # 1. A body that is not JSON although it says so (kombu cannot decode it).
    client.lpush(queue, raw_envelope(b"\xff{not json", queue))
    # 2. A task name no worker knows.
    dispatcher.celery.send_task("dispatcher.no_such_task", args=("x",), queue=queue)
    # 3. The delivery task with an argument that is not an id.
    dispatcher.celery.send_task(DELIVER_TASK, args=(12345,), queue=queue)
    # 4. The delivery task naming an id that has no status record.
    dispatcher.celery.send_task(DELIVER_TASK, args=(unknown_id,), queue=queue)
    # 5. A message that is not a Celery task message at all.
    with Connection(redis_server.url) as connection:
        Producer(connection).publish(
            {"hello": "world"}, exchange=Exchange(""), routing_key=queue, serializer="json"
        )

    # 6. Not even a transport envelope: raw bytes in the queue list.
    client.lpush(queue, b"\x00garbage that is not an envelope")

    entries = wait_rejected(client, 6)
    time.sleep(3)  # long enough for a redelivery loop to show
    entries = rejected_entries(client)
    reasons = sorted(e["reason"] for e in entries)
    print(f"\nF14: rejected once each: {reasons}")
    expected = ["undecodable", "undecodable", "unknown_task", "invalid_argument", "unknown_id"]
    assert reasons == sorted([*expected, "unknown_message"]), entries
    ghost = next(e for e in entries if e["reason"] == "unknown_id")
    assert unknown_id in ghost["detail"]
    stats = dispatcher.store.read.stats()
    for reason in set(reasons):
        assert stats[f"rejected:{reason}"] == reasons.count(reason)
    assert client.llen(queue) == 0
    assert client.hlen("unacked") == 0, "nothing left unacked to come back later"
    assert client.exists(keys.message(ref(unknown_id))) == 0, (
        "no record invented for the unknown id"
    )

    # The same worker process goes on delivering.
    ids = submit_texts(dispatcher, 10, prefix="after")
    records = assert_invariants(dispatcher, easemob, ids, timeout=20)
    assert all(r.state.value == "delivered" for r in records.values())
    assert worker.alive()
    assert worker.log().count(" ready.") == 1, "no worker restart"
    client.close()


def test_message_that_keeps_killing_workers_is_dead_lettered_after_max_requeues(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    # Every worker that takes this id dies in the middle of its send (SIGKILL, as a crash
    # on the message would). Each lost lease counts once, until max_requeues says poison.
    poison = new_id("poison")
    easemob.fault(path="/messages", body_contains=poison, latency=30)
    dispatcher.submit(text_message(poison))
    ok = submit_texts(dispatcher, 3, prefix="ok")
    settings = {"lease_seconds": 2, "max_requeues": 2}
    for attempt in (1, 2, 3):
        worker = start_worker(**settings)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            record = dispatcher.status(poison)
            if record.state.value == "processing" and record.attempts == attempt:
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"attempt {attempt} never started")
        worker.kill()
    start_worker(**settings)  # its reaper finds the third lost lease
    records = assert_invariants(dispatcher, easemob, [poison, *ok], timeout=60, allowed={poison: 3})
    record = records[poison]
    assert record.state.value == "dead"
    assert record.lastError is not None and record.lastError.code == "worker_lost"
    assert "dead-lettered" in (record.history[-1].detail or "")
