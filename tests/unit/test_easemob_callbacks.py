"""Easemob's callbacks taken in (docs/providers.md, "Callbacks"): a bad ``security``, a
stale timestamp or an unknown ``msg_id`` changes nothing; a read receipt sets ``readAt``
once and records ``message.read`` for the client's webhooks."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.channels.easemob.callbacks import CALLBACKS, security
from dispatcher.models import parse_message
from tests.conftest import outbox_events, outbox_keys, ref
from tests.unit.test_api_support import CLIENTS, TEXT, Harness, make_harness, unique_id

CALLBACK_SECRET = "callback-secret"
HOOK_SECRET = "whsec_" + base64.b64encode(b"h" * 32).decode()


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    hooks = [{"url": "https://hooks.example/h", "secret": HOOK_SECRET, "events": ["message.read"]}]
    harness = make_harness(
        redis_url,
        clients={**CLIENTS, "c1": {**CLIENTS["c1"], "webhooks": hooks}},
        easemob_org="org",
        easemob_app="app",
        easemob_client_id="id",
        easemob_client_secret="secret",
        easemob_callback_secret=CALLBACK_SECRET,
        easemob_callback_window=60,
    )
    harness.redis.delete(*outbox_keys(), keys.EASEMOB_UNKNOWN_CALLBACKS)
    yield harness
    harness.close()


def delivered(api: Harness, easemob_id: str) -> str:
    """A message of client c1 delivered, its Easemob id indexed as the channel does."""
    store = api.app.state.runtime.dispatcher.store
    message_id = unique_id()
    call = store.submit.prepare(
        ref(message_id), parse_message(TEXT), channel="easemob", client="c1"
    )
    store.submit.create(call)
    lease = store.lease.begin(ref(message_id), "w1", 10)
    store.lease.mark_delivered(lease, easemob_id, "delivered via easemob")
    api.redis.set(keys.easemob_msgid(easemob_id), ref(message_id).member)
    return message_id


def callback(*, secret: str = CALLBACK_SECRET, age_ms: int = 0, **fields: Any) -> dict[str, Any]:
    call_id = f"org#app_{uuid.uuid4().hex}"
    timestamp = int(time.time() * 1000) - age_ms
    body = {"callId": call_id, "timestamp": timestamp, "eventType": "chat", "chat_type": "chat"}
    body.update(fields)
    body["security"] = security(call_id, secret, timestamp)
    return body


def snapshot(api: Harness, message_id: str) -> tuple[Any, ...]:
    record = api.app.state.runtime.dispatcher.status(message_id)
    return (record.model_dump_json(), len(outbox_events(api.redis)))


def post(api: Harness, body: dict[str, Any]) -> Any:
    return api.http.post(CALLBACKS, content=json.dumps(body))


@pytest.mark.parametrize(
    "bad",
    [{"secret": "wrong"}, {"age_ms": 61_000}, {"age_ms": -61_000}],
    ids=["bad-security", "stale", "future"],
)
def test_a_bad_security_or_a_timestamp_outside_the_window_changes_nothing(
    api: Harness, bad: dict[str, Any]
) -> None:
    easemob_id = str(uuid.uuid4().int >> 64)
    message_id = delivered(api, easemob_id)
    before = snapshot(api, message_id)
    body = callback(chat_type="read_ack", ack_message_id=easemob_id, **bad)
    assert post(api, body).status_code == 403
    assert snapshot(api, message_id) == before


def test_a_tampered_field_breaks_the_security() -> None:
    assert security("c", "s", 1) != security("c", "s", 2)


def test_an_unknown_msg_id_is_recorded_and_ignored(api: Harness) -> None:
    message_id = delivered(api, str(uuid.uuid4().int >> 64))
    before = snapshot(api, message_id)
    response = post(api, callback(chat_type="read_ack", ack_message_id="999"))
    assert response.status_code == 200 and response.json() == {"status": "unknown"}
    assert snapshot(api, message_id) == before
    [entry] = [json.loads(e) for e in api.redis.lrange(keys.EASEMOB_UNKNOWN_CALLBACKS, 0, -1)]
    assert entry["msg_id"] == "999" and entry["kind"] == "read_ack"


def test_a_read_receipt_sets_read_at_once_and_records_message_read(api: Harness) -> None:
    easemob_id = str(uuid.uuid4().int >> 64)
    message_id = delivered(api, easemob_id)
    body = callback(chat_type="read_ack", ack_message_id=easemob_id)
    response = post(api, body)
    assert response.status_code == 200 and response.json() == {"status": "read:ok"}
    record = api.app.state.runtime.dispatcher.status(message_id)
    assert record.readAt is not None
    assert abs(record.readAt.timestamp() * 1000 - body["timestamp"]) < 2
    assert record.history[-1].detail == "Easemob receipt: read"
    [event] = outbox_events(api.redis)
    assert event["type"] == "message.read" and event["client"] == "c1"
    assert event["readAt"] == str(body["timestamp"])
    # Easemob's retry of the same call, and a second receipt: nothing more.
    assert post(api, body).json() == {"status": "duplicate"}
    again = post(api, callback(chat_type="read_ack", ack_message_id=easemob_id))
    assert again.json() == {"status": "read:already"}
    assert len(outbox_events(api.redis)) == 1


def test_delivery_receipts_go_into_the_history(api: Harness) -> None:
    easemob_id = str(uuid.uuid4().int >> 64)
    message_id = delivered(api, easemob_id)
    assert post(api, callback(eventType="chat_offline", msg_id=easemob_id)).json() == {
        "status": "noted"
    }
    record = api.app.state.runtime.dispatcher.status(message_id)
    assert record.history[-1].detail == "Easemob receipt: chat_offline"
    assert record.readAt is None and len(outbox_events(api.redis)) == 0


def test_a_body_that_is_not_a_callback_is_refused(api: Harness) -> None:
    assert api.http.post(CALLBACKS, content=b"[1]").status_code == 400
    assert api.http.post(CALLBACKS, content=b'{"callId": "x"}').status_code == 400
