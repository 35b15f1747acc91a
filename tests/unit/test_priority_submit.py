"""``priority`` on submit (docs/api.md): within the client's ``max_priority`` it is
recorded and shown by the status endpoint; above it the submit is 403 and leaves
nothing; a batch judges each message alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher import keys
from dispatcher.api.paths import SUBMIT_BATCH
from dispatcher.config import Settings
from dispatcher.ids import MessageRef
from tests.unit.test_api_support import (
    CLIENTS,
    TEXT,
    Harness,
    body_of,
    envelope_ok,
    make_harness,
    unique_id,
)

APPS = {"shop": {"org": "o2", "app": "a2", "client_id": "YXA6shop", "client_secret": "shop-secret"}}


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    clients = {
        **CLIENTS,
        "c2": {**CLIENTS["c2"], "max_priority": "high", "weight": 3, "easemob_app": "shop"},
    }
    harness = make_harness(
        redis_url,
        clients=clients,
        easemob_apps=APPS,
        easemob_org="o1",
        easemob_app="a1",
        easemob_client_id="YXA6one",
        easemob_client_secret="one-secret",
    )
    yield harness
    harness.close()


def text(message_id: str, **changes: Any) -> dict[str, Any]:
    return {**TEXT, "getMessageId": message_id, **changes}


def status_of(api: Harness, message_id: str, client: str = "c1") -> dict[str, Any]:
    response = api.status(message_id, client=client)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = envelope_ok(response)["data"]
    return data


def test_the_default_priority_is_normal_and_shown_with_the_default_app(api: Harness) -> None:
    message_id = unique_id()
    assert api.submit(text(message_id)).status_code == 200
    record = status_of(api, message_id)
    assert record["priority"] == "normal"
    assert record["app"] == "default"


def test_a_priority_within_the_clients_maximum_is_recorded(api: Harness) -> None:
    ids = {priority: unique_id() for priority in ("high", "normal", "bulk")}
    for priority, message_id in ids.items():
        response = api.submit(text(message_id, priority=priority), client="c2")
        assert response.status_code == 200, response.text
    for priority, message_id in ids.items():
        record = status_of(api, message_id, client="c2")
        assert record["priority"] == priority
        assert record["app"] == "shop"  # c2's own Easemob app, chosen at submit


def test_a_priority_above_the_clients_maximum_is_403_and_leaves_nothing(api: Harness) -> None:
    message_id = unique_id()
    queued = api.queued()
    response = api.submit(text(message_id, priority="high"))
    assert response.status_code == 403
    message = envelope_ok(response)["message"]
    assert "'high'" in message and "'normal'" in message and "max_priority" in message
    assert not api.has_record(message_id)
    assert api.queued() == queued
    # bulk is below the default maximum
    assert api.submit(text(unique_id(), priority="bulk")).status_code == 200


def test_a_batch_refuses_only_the_message_above_the_maximum(api: Harness) -> None:
    ids = [unique_id() for _ in range(3)]
    messages = [text(ids[0]), text(ids[1], priority="high"), text(ids[2], priority="bulk")]
    body = body_of({"messages": messages})
    response = api.http.post(
        SUBMIT_BATCH,
        params=api.params(body, path=SUBMIT_BATCH),
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    results = envelope_ok(response)["data"]["results"]
    assert results[0] == {"getMessageId": ids[0]}
    assert results[1]["code"] == 403 and "max_priority" in results[1]["message"]
    assert results[2] == {"getMessageId": ids[2]}
    assert not api.has_record(ids[1])
    stored = api.redis.hget(keys.message(MessageRef("c1", ids[2])), "priority")
    assert stored == b"bulk"


def test_the_status_of_many_shows_each_priority(api: Harness) -> None:
    ids = [unique_id(), unique_id()]
    api.submit(text(ids[0], priority="bulk"))
    api.submit(text(ids[1]))
    response = api.status_many(ids)
    records = envelope_ok(response)["data"]
    assert [r["priority"] for r in records] == ["bulk", "normal"]


def _settings(**values: Any) -> Settings:
    return Settings(redis_url="redis://127.0.0.1:1/0", **values)


def test_a_client_naming_an_unknown_app_is_refused_at_start_without_secrets() -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(
            clients={"c": {"secret": "s3cr3t-client", "easemob_app": "nope"}},
            easemob_apps=APPS,
        )
    assert "'nope'" in str(caught.value) and "shop" in str(caught.value)
    assert "shop-secret" not in str(caught.value) and "s3cr3t-client" not in str(caught.value)


@pytest.mark.parametrize("name", ["default", "has space", "x" * 33])
def test_app_names_are_checked(name: str) -> None:
    with pytest.raises(ValidationError):
        _settings(easemob_apps={name: APPS["shop"]})


def test_client_priority_and_weight_are_checked() -> None:
    for entry in ({"max_priority": "urgent"}, {"weight": 0}, {"weight": 1.5}):
        with pytest.raises(ValidationError):
            _settings(clients={"c": {"secret": "s", **entry}})
    client = _settings(clients={"c": {"secret": "s"}}).clients["c"]
    assert (client.max_priority, client.weight, client.easemob_app) == ("normal", 1, None)


def test_an_app_secret_is_not_in_the_settings_repr() -> None:
    settings = _settings(easemob_apps=APPS)
    assert "shop-secret" not in repr(settings) and "shop-secret" not in str(settings)


def test_the_in_process_producer_may_ask_for_any_priority(redis_url: str) -> None:
    from dispatcher import Dispatcher

    settings = Settings(redis_url=redis_url, queue=f"p-{uuid.uuid4().hex[:8]}", status_ttl=600)
    producer = Dispatcher(settings)
    try:
        message_id = producer.submit({**TEXT, "priority": "high"})
        record = producer.status(message_id)
        assert record is not None and record.priority == "high"
    finally:
        producer.redis.delete(settings.queue)
        producer.close()
