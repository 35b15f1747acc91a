"""Signature v2 over the API (docs/security.md): a sign is good for one request only, every
authentication failure is the same answer, and nothing about a request is judged before its
caller is known."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest

from dispatcher import keys
from dispatcher.api.paths import DEAD_LETTERS, DEAD_LETTERS_REPLAY, STATUS, STATUS_MANY, SUBMIT
from dispatcher.ids import MessageRef
from tests.unit.test_api_dead_letters import make_dead
from tests.unit.test_api_support import (
    TEXT,
    Harness,
    body_of,
    field_errors,
    make_harness,
    unique_id,
)


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url, qiniu_domain="http://media.example.com")
    yield harness
    harness.close()


# ---------------------------------------------------------------------------
# A signed request is good for its method, path, query and body only


def test_admin_status_request_resent_to_the_replay_endpoint_is_refused(api: Harness) -> None:
    dead = make_dead(api)
    body = body_of({"getMessageIds": [dead]})
    params = api.params(body, path=STATUS_MANY, client="ops")
    assert api.http.post(STATUS_MANY, params=params, content=body).status_code == 200

    resent = api.http.post(DEAD_LETTERS_REPLAY, params=params, content=body)
    assert resent.status_code == 401
    assert api.redis.hget(keys.message(MessageRef("c1", dead)), "state") == b"dead"
    # With a nonce of its own the same bytes would still not pass: the path is signed.
    fresh = api.params(body, path=STATUS_MANY, client="ops")
    assert api.http.post(DEAD_LETTERS_REPLAY, params=fresh, content=body).status_code == 401
    assert api.redis.hget(keys.message(MessageRef("c1", dead)), "state") == b"dead"


def test_status_lookup_sign_does_not_work_for_another_id(api: Harness) -> None:
    first = api.submit(TEXT).json()["data"]["getMessageId"]
    second = api.submit(TEXT).json()["data"]["getMessageId"]
    path = STATUS.format(getMessageId=first)
    params = api.params(method="GET", path=path)
    response = api.http.get(STATUS.format(getMessageId=second), params=params)
    assert response.status_code == 401
    assert api.http.get(path, params=params).status_code == 200


def test_a_post_sign_sent_as_a_get_is_refused(api: Harness) -> None:
    message_id = api.submit(TEXT).json()["data"]["getMessageId"]
    body = body_of({"getMessageIds": [message_id]})
    params = api.params(body, path=STATUS_MANY)
    # GET on the same path is the single-status route (its id is "status").
    assert api.http.request("GET", STATUS_MANY, params=params, content=body).status_code == 401


def test_an_untimestamped_request_is_401_for_a_v2_client(api: Harness) -> None:
    message_id = unique_id()
    body = body_of({**TEXT, "getMessageId": message_id})
    seed_style = api.params(body, timestamp=None, nonce=None, legacy=True)
    v2_without_time = api.params(body, timestamp=None, nonce=None)
    for params in (seed_style, v2_without_time):
        assert api.submit(body, params=params).status_code == 401
    assert not api.has_record(message_id)


def test_a_legacy_client_may_resend_an_untimestamped_request_as_the_seed_did(
    api: Harness,
) -> None:
    """No timestamp, no replay guard: the seed's caller retrying the same bytes gets the same
    id, and without getMessageId each resend is a new message (docs/security.md)."""
    message_id = unique_id()
    body = body_of({**TEXT, "getMessageId": message_id})
    params = api.params(body, client="old", timestamp=None, nonce=None, legacy=True)
    assert "timestamp" not in params and "nonce" not in params
    first = api.submit(body, params=params)
    again = api.submit(body, params=params)
    assert first.status_code == again.status_code == 200, again.text
    assert first.json()["data"] == again.json()["data"] == {"getMessageId": message_id}
    assert api.queued() == 1


# ---------------------------------------------------------------------------
# Every authentication failure is the same answer

_FOOT = re.compile(rb',"foot":\{[^{}]*\}\}$')


def _without_foot(response: httpx.Response) -> bytes:
    assert _FOOT.search(response.content), response.content
    return _FOOT.sub(b"}", response.content)


def test_authentication_failures_are_byte_identical_apart_from_the_foot(api: Harness) -> None:
    body = body_of(TEXT)
    replayed = api.params(body)
    assert api.submit(body, params=replayed).status_code == 200
    answers = {
        "unknown client": api.submit(body, client="intruder", secret="x", channel="ch1"),
        "bad sign": api.submit(body, secret="not-the-secret"),
        "channel not allowed": api.submit(body, channel="ch2"),
        "stale timestamp": api.submit(body, timestamp=int(time.time()) - 1000),
        "replayed nonce": api.submit(body, params=replayed),
        "missing sign": api.submit(body, params={"client": "c1", "channel": "ch1"}),
    }
    bodies = {name: _without_foot(response) for name, response in answers.items()}
    assert {response.status_code for response in answers.values()} == {401}
    assert len(set(bodies.values())) == 1, bodies
    assert json.loads(bodies["unknown client"]) == {
        "code": 401,
        "message": "authentication failed",
        "data": None,
        "page": None,
    }
    headers = {name: sorted(r.headers.keys()) for name, r in answers.items()}
    assert len({tuple(h) for h in headers.values()}) == 1, headers


# ---------------------------------------------------------------------------
# Nothing about a request is judged before its caller is known


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", DEAD_LETTERS, {"limit": "abc"}),
        ("GET", DEAD_LETTERS, {"offset": "-x"}),
        ("GET", "/sender/v1/messages/not-an-id!", {}),
        ("GET", "/sender/v1/messages/" + "x" * 65, {}),
        ("POST", SUBMIT, {}),
    ],
)
def test_unauthenticated_malformed_requests_get_401_not_400(
    api: Harness, method: str, path: str, query: dict[str, str]
) -> None:
    params = {"client": "c1", "channel": "ch1", "sign": "0" * 64, **query}
    response = api.http.request(method, path, params=params, content=b"{not json")
    assert response.status_code == 401, response.text
    assert response.json()["message"] == "authentication failed"


def test_an_authenticated_operator_gets_the_400_for_a_bad_limit(api: Harness) -> None:
    params = api.params(method="GET", path=DEAD_LETTERS, client="ops", limit="abc")
    response = api.http.get(DEAD_LETTERS, params=params)
    assert response.status_code == 400
    assert "limit" in field_errors(response)
