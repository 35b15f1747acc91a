"""Status lookups: ``GET /sender/v1/messages/{id}`` and ``POST /sender/v1/messages/status``.
A client sees only its own messages; unknown ids are 404 / null."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.api.paths import STATUS, STATUS_MANY
from tests.unit.test_api_support import (
    TEXT,
    Harness,
    envelope_ok,
    field_errors,
    make_harness,
    unique_id,
)


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def submit(api: Harness, client: str = "c1", **extra: Any) -> str:
    response = api.submit({**TEXT, **extra}, client=client)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["getMessageId"])


def test_own_message_status_is_the_record_in_the_envelope(api: Harness) -> None:
    message_id = submit(api, to="u_someone")
    response = api.status(message_id)
    assert response.status_code == 200
    envelope = envelope_ok(response)
    assert envelope["message"] == "成功"
    record = envelope["data"]
    assert record["getMessageId"] == message_id
    assert record["state"] == "queued"
    assert record["from"] == "u_sender" and record["to"] == "u_someone"
    assert record["client"] == "c1"
    assert record["messageType"] == 1
    assert [h["state"] for h in record["history"]] == ["queued"]


def test_unknown_id_is_404_in_the_envelope(api: Harness) -> None:
    response = api.status(unique_id())
    assert response.status_code == 404
    assert envelope_ok(response)["data"] is None


def test_another_clients_message_is_404_as_if_unknown(api: Harness) -> None:
    message_id = submit(api, client="c2")
    assert api.status(message_id, client="c1").status_code == 404
    assert api.status(message_id, client="c2").status_code == 200


def test_admin_client_sees_another_clients_message_by_naming_it(api: Harness) -> None:
    message_id = submit(api, client="c2")
    assert api.status(message_id, client="ops").status_code == 404  # its own namespace
    response = api.status(message_id, client="ops", owner="c2")
    assert response.status_code == 200
    assert response.json()["data"]["client"] == "c2"


def test_with_auth_disabled_every_caller_shares_one_namespace(redis_url: str) -> None:
    api = make_harness(redis_url, auth_enabled=False)
    try:
        message_id = submit(api, client="c2")
        path = STATUS.format(getMessageId=message_id)
        for query in ({}, {"client": "c1"}):
            response = api.http.get(path, params=query)
            assert response.status_code == 200
            assert response.json()["data"]["getMessageId"] == message_id
        assert api.http.get(path, params={"owner": "c2"}).status_code == 404
    finally:
        api.close()


def test_status_lookup_needs_a_valid_sign(api: Harness) -> None:
    message_id = submit(api)
    response = api.status(message_id, secret="wrong")
    assert response.status_code == 401
    assert envelope_ok(response)["data"] is None


def test_replayed_status_lookup_is_refused(api: Harness) -> None:
    message_id = submit(api)
    path = STATUS.format(getMessageId=message_id)
    params = api.params(b"", method="GET", path=path)
    assert api.http.get(path, params=params).status_code == 200
    assert api.http.get(path, params=params).status_code == 401


def test_malformed_id_in_the_path_is_400_naming_it(api: Harness) -> None:
    response = api.status("not-an-id!")
    assert response.status_code == 400
    assert "getMessageId" in field_errors(response)


def test_many_statuses_come_back_in_order_with_null_for_unknown_and_foreign(api: Harness) -> None:
    mine_a = submit(api)
    foreign = submit(api, client="c2")
    mine_b = submit(api)
    unknown = unique_id()
    response = api.status_many([mine_b, unknown, foreign, mine_a, mine_b])
    assert response.status_code == 200
    data = envelope_ok(response)["data"]
    assert [r and r["getMessageId"] for r in data] == [mine_b, None, None, mine_a, mine_b]


def test_empty_id_list_is_an_empty_list(api: Harness) -> None:
    response = api.status_many([])
    assert response.status_code == 200
    assert response.json()["data"] == []


def test_a_hundred_ids_are_allowed(api: Harness) -> None:
    response = api.status_many([unique_id() for _ in range(100)])
    assert response.status_code == 200
    assert response.json()["data"] == [None] * 100


def test_more_than_a_hundred_ids_is_400(api: Harness) -> None:
    response = api.status_many([unique_id() for _ in range(101)])
    assert response.status_code == 400
    assert "getMessageIds" in field_errors(response)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[]", "body"),
        (b"{}", "getMessageIds"),
        (b'{"getMessageIds": "m0abc"}', "getMessageIds"),
        (b'{"getMessageIds": ["ok1", "bad-id"]}', "getMessageIds.1"),
        (b'{"getMessageIds": [1]}', "getMessageIds.0"),
        (b'{"getMessageIds": [], "more": 1}', "more"),
    ],
)
def test_bad_status_query_is_400_naming_the_field(api: Harness, body: bytes, field: str) -> None:
    params = api.params(body, path=STATUS_MANY)
    response = api.http.post(STATUS_MANY, params=params, content=body)
    assert response.status_code == 400, response.text
    assert field in field_errors(response)


def test_status_lookup_with_redis_down_is_503(redis_url: str) -> None:
    from dispatcher.embedded import free_port

    api = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = api.status(unique_id())
        assert response.status_code == 503
        assert envelope_ok(response)["data"] is None
    finally:
        api.close()
