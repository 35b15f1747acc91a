"""Dead letters over HTTP: a client lists and replays its own; an admin client every client's.
(Which client sees which: tests/unit/test_api_tenancy.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatcher.api.paths import DEAD_LETTERS, DEAD_LETTERS_REPLAY
from dispatcher.errors import DeliveryError
from dispatcher.ids import MessageRef
from dispatcher.models import parse_message
from tests.unit.test_api_support import TEXT, Harness, body_of, envelope_ok, make_harness, unique_id


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def make_dead(api: Harness, client: str = "c1", message_id: str | None = None) -> str:
    """A message of ``client`` (in its namespace) whose one attempt killed it."""
    store = api.app.state.runtime.dispatcher.store
    message_id = message_id or unique_id()
    ref = MessageRef(client, message_id)
    call = store.submit.prepare(ref, parse_message(TEXT), channel="easemob", client=client)
    store.submit.create(call)
    lease = store.lease.begin(ref, "w1", 10)
    store.lease.mark_dead(
        lease, DeliveryError("down", "Easemob answered 503", retryable=True), "gave up"
    )
    return message_id


def test_an_admin_client_lists_dead_letters_with_their_last_error(api: Harness) -> None:
    message_id = make_dead(api)
    response = api.http.get(
        DEAD_LETTERS,
        params=api.params(b"", method="GET", path=DEAD_LETTERS, client="ops", limit="1000"),
    )
    envelope = envelope_ok(response)
    assert response.status_code == 200
    [letter] = [d for d in envelope["data"] if d["getMessageId"] == message_id]
    assert letter["client"] == "c1"
    assert letter["lastError"] == {
        "code": "down",
        "message": "Easemob answered 503",
        "retryable": True,
    }


def test_a_plain_client_lists_its_own_dead_letters_only(api: Harness) -> None:
    mine, theirs = make_dead(api, "c1"), make_dead(api, "c2")
    response = api.http.get(
        DEAD_LETTERS,
        params=api.params(b"", method="GET", path=DEAD_LETTERS, client="c1", limit="1000"),
    )
    listed = envelope_ok(response)["data"]
    assert response.status_code == 200
    assert mine in [d["getMessageId"] for d in listed]
    assert theirs not in [d["getMessageId"] for d in listed]
    assert {d["client"] for d in listed} == {"c1"}


def test_replay_requeues_once_and_reports_what_it_skipped(api: Harness) -> None:
    message_id = make_dead(api)
    queued = api.queued()
    body = body_of({"getMessageIds": [message_id, "neverSeen"]})
    response = api.http.post(
        DEAD_LETTERS_REPLAY,
        params=api.params(body, path=DEAD_LETTERS_REPLAY, client="ops"),
        content=body,
    )
    data = envelope_ok(response)["data"]
    # The ids name the caller's own messages unless an admin names an owner.
    assert data["replayed"] == []
    assert data["skipped"] == [
        {"getMessageId": message_id, "client": "ops", "reason": "missing"},
        {"getMessageId": "neverSeen", "client": "ops", "reason": "missing"},
    ]
    response = api.http.post(
        DEAD_LETTERS_REPLAY,
        params=api.params(body, path=DEAD_LETTERS_REPLAY, client="ops", owner="c1"),
        content=body,
    )
    data = envelope_ok(response)["data"]
    assert data["replayed"] == [{"getMessageId": message_id, "client": "c1"}]
    assert data["skipped"] == [{"getMessageId": "neverSeen", "client": "c1", "reason": "missing"}]
    assert api.queued() == queued + 1
    body = body_of({"getMessageIds": [message_id]})
    again = api.http.post(
        DEAD_LETTERS_REPLAY,
        params=api.params(body, path=DEAD_LETTERS_REPLAY, client="c1"),
        content=body,
    )
    assert envelope_ok(again)["data"]["skipped"] == [
        {"getMessageId": message_id, "client": "c1", "reason": "state:queued"}
    ]
    assert api.queued() == queued + 1


def test_replay_body_is_validated(api: Harness) -> None:
    body = body_of({"getMessageIds": ["bad-id"], "extra": 1})
    response = api.http.post(
        DEAD_LETTERS_REPLAY,
        params=api.params(body, path=DEAD_LETTERS_REPLAY, client="ops"),
        content=body,
    )
    assert response.status_code == 400
    fields = {e["field"] for e in envelope_ok(response)["data"]["errors"]}
    assert {"getMessageIds.0", "extra"} <= fields
