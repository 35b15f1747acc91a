"""The queue message the producer pushes itself: what kombu and Celery would have sent."""

from __future__ import annotations

import base64
import json
from typing import Any

import fakeredis
import pytest
import redis
from kombu import Connection
from kombu.transport.virtual import Message as KombuMessage

from dispatcher import Dispatcher, keys
from dispatcher.broker import make_celery
from dispatcher.config import Settings
from dispatcher.enqueue import DELIVER_TASK, RING_TASK, TaskMessageTemplate, task_args
from dispatcher.errors import Conflict, Unavailable
from dispatcher.models import parse_message
from dispatcher.store import PendingLane, StatusStore
from dispatcher.store.pending import RING_MS
from tests.conftest import ref

QUEUE = "enqueue-test"


def text(body: str = "hi", message_id: str | None = None) -> Any:
    payload: dict[str, Any] = {
        "messageType": 1,
        "from": "a",
        "to": "b",
        "messageInfo": {"textMessage": body},
    }
    if message_id:
        payload["getMessageId"] = message_id
    return parse_message(payload)


@pytest.fixture()
def template() -> TaskMessageTemplate:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", queue=QUEUE)
    return TaskMessageTemplate.capture(make_celery(settings), DELIVER_TASK, QUEUE)


@pytest.mark.parametrize("message_id", ["m0abcDEF123", 'odd"id\\é中', "x" * 300])
def test_the_message_decodes_with_kombu_and_names_task_args_and_queue(
    template: TaskMessageTemplate, message_id: str
) -> None:
    raw = template.build(ref(message_id))
    with Connection("memory://") as connection:
        message = KombuMessage(json.loads(raw), channel=connection.default_channel)
        args, kwargs, embed = message.decode()
    assert message.headers["task"] == DELIVER_TASK
    assert (
        message.headers["id"] == message.headers["root_id"] == message.properties["correlation_id"]
    )
    assert args == [ref(message_id).member] and kwargs == {}
    assert embed == {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert message.delivery_info["routing_key"] == QUEUE
    assert message.content_type == "application/json"
    assert template.queue_key == QUEUE
    again = json.loads(template.build(ref(message_id)))
    assert again["headers"]["id"] != message.headers["id"]
    assert again["properties"]["delivery_tag"] != message.delivery_tag


def test_celery_reads_it_as_a_deliver_request(template: TaskMessageTemplate) -> None:
    from celery.worker.request import Request

    from dispatcher.worker import app

    raw = template.build(ref("m0abc"))
    with Connection("memory://") as connection:
        message = KombuMessage(json.loads(raw), channel=connection.default_channel)
        request = Request(message, app=app, task=app.tasks[DELIVER_TASK])
    assert request.name == DELIVER_TASK
    assert request.args == [ref("m0abc").member] and request.kwargs == {}
    assert request.id == message.headers["id"]


def test_the_message_is_what_send_task_pushes_to_redis(redis_client: redis.Redis) -> None:
    url = redis_client.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    queue = "enqueue-compare"
    settings = Settings(redis_url=redis_url, queue=queue)
    celery = make_celery(settings)
    redis_client.delete(queue)
    odd = ref('m0"é')
    celery.send_task(DELIVER_TASK, args=task_args(odd), queue=queue)
    pushed = json.loads(redis_client.rpop(queue))
    ours = json.loads(TaskMessageTemplate.capture(celery, DELIVER_TASK, queue).build(odd))
    celery.close()
    for message in (pushed, ours):
        task_id = message["headers"]["id"]
        assert message["headers"]["root_id"] == message["properties"]["correlation_id"] == task_id
        for place, key in (
            (message["headers"], "id"),
            (message["headers"], "root_id"),
            (message["properties"], "correlation_id"),
            (message["properties"], "delivery_tag"),
        ):
            place[key] = "*"
    assert ours == pushed
    assert base64.b64decode(ours["body"]) == base64.b64decode(pushed["body"])


@pytest.fixture()
def fake_dispatcher() -> Dispatcher:
    settings = Settings(queue=QUEUE, memory_refuse_ratio=0, delivery_batch=8)
    return Dispatcher(settings, client=fakeredis.FakeRedis())


def test_submits_wait_on_the_pending_list_and_ring_once_in_the_same_call(
    fake_dispatcher: Dispatcher,
) -> None:
    r = fake_dispatcher.redis
    lane = PendingLane(QUEUE)
    assert fake_dispatcher.submit_message(text(message_id="m0one")).created
    assert fake_dispatcher.submit_message(text(message_id="m0two")).created
    entries = [keys.pending_entry(ref(m)).encode() for m in ("m0two", "m0one")]
    assert r.lrange(lane.pending, 0, -1) == entries
    assert r.llen(QUEUE) == 1, "one ring while one is outstanding"
    ring = json.loads(r.lindex(QUEUE, 0))
    assert ring["headers"]["task"] == RING_TASK
    assert json.loads(base64.b64decode(ring["body"]))[0] == [lane.name]
    assert 0 < r.pttl(lane.flag) <= RING_MS
    assert fake_dispatcher.submit_message(text(message_id="m0one")).created is False
    assert r.llen(lane.pending) == 2


def other_broker(
    monkeypatch: pytest.MonkeyPatch, delivery_batch: int
) -> tuple[Dispatcher, list[tuple[Any, ...]]]:
    """A dispatcher whose broker is not its Redis, and the tasks it sends."""
    settings = Settings(
        queue=QUEUE,
        broker_url="redis://127.0.0.1:1/3",
        memory_refuse_ratio=0,
        delivery_batch=delivery_batch,
    )
    d = Dispatcher(settings, client=fakeredis.FakeRedis())
    sent: list[tuple[Any, ...]] = []
    monkeypatch.setattr(d.celery, "send_task", lambda *a, **k: sent.append((a, k)))
    return d, sent


def test_another_broker_gets_a_ring_published_after_each_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d, sent = other_broker(monkeypatch, delivery_batch=8)
    assert d.submit_message(text(message_id="m0four")).created
    assert d.submit_message(text(message_id="m0five")).created
    assert sent == [((RING_TASK,), {"args": ("default",), "queue": QUEUE})] * 2
    assert d.redis.llen(QUEUE) == 0
    assert d.redis.llen(PendingLane(QUEUE).pending) == 2


def test_submit_records_and_queues_in_one_call_and_a_duplicate_queues_nothing() -> None:
    fake_dispatcher = Dispatcher(
        Settings(queue=QUEUE, memory_refuse_ratio=0, delivery_batch=0),
        client=fakeredis.FakeRedis(),
    )
    r = fake_dispatcher.redis
    assert fake_dispatcher.submit_message(text(message_id="m0one")).created
    assert r.llen(QUEUE) == 1
    assert fake_dispatcher.status("m0one").state == "queued"
    queued = json.loads(r.lindex(QUEUE, 0))
    assert queued["headers"]["task"] == DELIVER_TASK
    assert json.loads(base64.b64decode(queued["body"]))[0] == [ref("m0one").member]
    assert fake_dispatcher.submit_message(text(message_id="m0one")).created is False
    with pytest.raises(Conflict):
        fake_dispatcher.submit_message(text("other", message_id="m0one"))
    assert r.llen(QUEUE) == 1


def test_a_redis_error_is_unavailable_and_leaves_nothing(fake_dispatcher: Dispatcher) -> None:
    r = fake_dispatcher.redis
    r.set(QUEUE, "not a list")  # LPUSH fails inside the script: nothing else may be written
    with pytest.raises(redis.ResponseError):
        fake_dispatcher.submit_message(text(message_id="m0two"))
    assert r.exists(keys.message(ref("m0two"))) == 0
    assert r.zscore(keys.shard_of(ref("m0two").member).inflight, ref("m0two").member) is None
    assert r.llen(PendingLane(QUEUE).pending) == 0
    r.delete(QUEUE)
    fake_dispatcher.redis.connection_pool.disconnect()

    def down(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("down")

    fake_dispatcher.store.submit.create = down  # type: ignore[method-assign]
    with pytest.raises(Unavailable):
        fake_dispatcher.submit_message(text(message_id="m0three"))


def test_another_broker_keeps_send_task(monkeypatch: pytest.MonkeyPatch) -> None:
    d, sent = other_broker(monkeypatch, delivery_batch=0)
    assert d.submit_message(text(message_id="m0four")).created
    expected = {"args": (ref("m0four").member,), "queue": QUEUE, "task_id": None}
    assert sent == [((DELIVER_TASK,), expected)]
    assert d.redis.llen(QUEUE) == 0


def test_create_without_a_queue_message_is_unchanged() -> None:
    store = StatusStore(fakeredis.FakeRedis())
    call = store.submit.prepare(ref("id1"), text(), channel="easemob")
    assert store.submit.create(call).outcome == "created"
    assert store.redis.keys("enqueue*") == []
