"""Dead letters over HTTP: operators (admin clients) list and replay them; others get 403."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatcher.api.paths import DEAD_LETTERS, DEAD_LETTERS_REPLAY
from dispatcher.errors import DeliveryError
from dispatcher.models import parse_message
from tests.conftest import ref
from tests.unit.test_api_support import TEXT, Harness, body_of, envelope_ok, make_harness, unique_id


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def make_dead(api: Harness) -> str:
    store = api.app.state.runtime.dispatcher.store
    message_id = unique_id()
    call = store.submit.prepare(
        ref(message_id), parse_message(TEXT), channel="easemob", client="c1"
    )
    store.submit.create(call)
    lease = store.lease.begin(ref(message_id), "w1", 10)
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
    assert letter["lastError"] == {
        "code": "down",
        "message": "Easemob answered 503",
        "retryable": True,
    }


def test_a_plain_client_may_not_touch_dead_letters(api: Harness) -> None:
    make_dead(api)
    assert (
        api.http.get(
            DEAD_LETTERS, params=api.params(b"", method="GET", path=DEAD_LETTERS, client="c1")
        ).status_code
        == 403
    )
    body = body_of({"all": True})
    response = api.http.post(
        DEAD_LETTERS_REPLAY,
        params=api.params(body, path=DEAD_LETTERS_REPLAY, client="c1"),
        content=body,
    )
    assert response.status_code == 403
    assert envelope_ok(response)["code"] == 403


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
    assert data["replayed"] == [message_id]
    assert data["skipped"] == [{"getMessageId": "neverSeen", "reason": "missing"}]
    assert api.queued() == queued + 1
    body = body_of({"getMessageIds": [message_id]})
    again = api.http.post(
        DEAD_LETTERS_REPLAY,
        params=api.params(body, path=DEAD_LETTERS_REPLAY, client="ops"),
        content=body,
    )
    assert envelope_ok(again)["data"]["skipped"] == [
        {"getMessageId": message_id, "reason": "state:queued"}
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
