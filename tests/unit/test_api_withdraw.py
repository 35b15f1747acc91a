"""``POST /sender/v1/messages/{id}/cancel`` and ``.../recall`` through the signed API, and
``sendAt`` on a submit: what each answers, and only for the caller's own messages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher.api.paths import CANCEL, RECALL
from tests.unit.test_api_support import TEXT, Harness, field_errors, make_harness, unique_id


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def submit(api: Harness, client: str = "c1", **extra: Any) -> str:
    response = api.submit({**TEXT, **extra}, client=client)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["getMessageId"])


def act(api: Harness, template: str, message_id: str, client: str = "c1") -> httpx.Response:
    path = template.format(getMessageId=message_id)
    return api.http.post(path, params=api.params(b"", path=path, client=client), content=b"")


def test_a_submit_with_a_later_send_at_is_scheduled_and_then_cancelled(api: Harness) -> None:
    due = int(time.time() * 1000) + 120_000
    message_id = submit(api, sendAt=due)
    record = api.status(message_id).json()["data"]
    assert record["state"] == "scheduled"
    assert record["scheduledFor"].startswith(time.strftime("%Y-%m-%d", time.gmtime(due / 1000)))
    assert api.queued() == 0

    answer = act(api, CANCEL, message_id)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {
        "getMessageId": message_id,
        "outcome": "cancelled",
        "state": "cancelled",
        "was": "scheduled",
    }
    again = act(api, CANCEL, message_id).json()["data"]
    assert (again["outcome"], again["state"]) == ("already_done", "cancelled")
    assert api.status(message_id).json()["data"]["state"] == "cancelled"


def test_a_bad_send_at_is_a_400_naming_it_and_keeps_nothing(api: Harness) -> None:
    message_id = unique_id()
    for value in ("next tuesday", "2030-01-01T09:00:00", int(time.time() * 1000) + 40 * 86_400_000):
        response = api.submit({**TEXT, "getMessageId": message_id, "sendAt": value})
        assert response.status_code == 400
        assert list(field_errors(response)) == ["sendAt"]
    assert not api.has_record(message_id)


def test_cancel_and_recall_see_only_the_callers_messages(api: Harness) -> None:
    message_id = submit(api, client="c2")
    for template in (CANCEL, RECALL):
        assert act(api, template, message_id, client="c1").status_code == 404
        assert act(api, template, unique_id()).status_code == 404
    assert api.status(message_id, client="c2").json()["data"]["state"] == "queued"
    assert act(api, CANCEL, message_id, client="c2").json()["data"]["outcome"] == "cancelled"


def test_recall_of_a_message_not_delivered_is_a_409_with_the_reason(api: Harness) -> None:
    message_id = submit(api)
    response = act(api, RECALL, message_id)
    assert response.status_code == 409
    data = response.json()["data"]
    assert data == {"reason": "not_delivered", "state": "queued"}
