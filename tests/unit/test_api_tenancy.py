"""Per-client namespaces over HTTP: a caller-chosen getMessageId is unique per client.

The same id from two clients is two messages; every lookup, status batch and dead-letter
listing or replay sees the caller's own messages only; no answer depends on another
client's data (no 200/409 oracle, no squatting); an admin client reaches another client's
messages by naming it (``owner``), and that is logged.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher import keys
from dispatcher.api.paths import DEAD_LETTERS, DEAD_LETTERS_REPLAY
from dispatcher.config import Settings
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from dispatcher.producer import Dispatcher
from tests.unit.test_api_dead_letters import make_dead
from tests.unit.test_api_support import (
    TEXT,
    Harness,
    body_of,
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


def text(message_id: str, words: str) -> dict[str, Any]:
    return {**TEXT, "getMessageId": message_id, "messageInfo": {"textMessage": words}}


def stored_text(api: Harness, client: str, message_id: str) -> str:
    raw = api.redis.hget(keys.message(MessageRef(client, message_id)), "message")
    return str(json.loads(raw or b"{}")["messageInfo"]["textMessage"])


def dead_letters(api: Harness, client: str, **query: str) -> list[dict[str, Any]]:
    params = api.params(b"", method="GET", path=DEAD_LETTERS, client=client, limit="1000", **query)
    response = api.http.get(DEAD_LETTERS, params=params)
    assert response.status_code == 200, response.text
    return list(envelope_ok(response)["data"])


def replay(api: Harness, client: str, payload: dict[str, Any], **query: str) -> Any:
    body = body_of(payload)
    params = api.params(body, path=DEAD_LETTERS_REPLAY, client=client, **query)
    return api.http.post(DEAD_LETTERS_REPLAY, params=params, content=body)


@pytest.mark.parametrize("same_body", [True, False], ids=["identical", "different"])
def test_the_same_id_from_two_clients_is_two_messages(api: Harness, same_body: bool) -> None:
    message_id = unique_id()
    queued = api.queued()
    first = api.submit(text(message_id, "Your code is 4711"), client="c1")
    second = api.submit(
        text(message_id, "Your code is 4711" if same_body else "guess"), client="c2"
    )
    assert (first.status_code, second.status_code) == (200, 200), second.text
    assert first.json()["data"] == second.json()["data"] == {"getMessageId": message_id}
    assert api.queued() == queued + 2  # two messages, each queued once

    # Each client sees its own message, never the other's, one by one and in a batch.
    for client in ("c1", "c2"):
        record = envelope_ok(api.status(message_id, client=client))["data"]
        assert record["client"] == client
        [batch] = envelope_ok(api.status_many([message_id], client=client))["data"]
        assert batch["client"] == client
    assert stored_text(api, "c1", message_id) == "Your code is 4711"
    assert stored_text(api, "c2", message_id) == ("Your code is 4711" if same_body else "guess")
    # A resubmit conflicts, or not, with the client's own message alone.
    assert api.submit(text(message_id, "guess"), client="c1").status_code == 409
    assert api.submit(text(message_id, "guess"), client="c2").status_code == (
        409 if same_body else 200
    )


def test_an_id_submitted_first_by_another_client_cannot_be_squatted(api: Harness) -> None:
    message_id = unique_id()
    assert api.submit(text(message_id, "squatter"), client="c2").status_code == 200
    queued = api.queued()
    response = api.submit(text(message_id, "the real one"), client="c1")
    assert response.status_code == 200
    assert api.queued() == queued + 1
    assert stored_text(api, "c1", message_id) == "the real one"
    assert stored_text(api, "c2", message_id) == "squatter"


def test_generated_ids_are_unique_across_clients(api: Harness) -> None:
    ids = {api.submit(TEXT, client=c).json()["data"]["getMessageId"] for c in ("c1", "c2") * 5}
    assert len(ids) == 10


def test_a_plain_client_may_not_name_another_owner(api: Harness) -> None:
    message_id = api.submit(TEXT, client="c2").json()["data"]["getMessageId"]
    response = api.status(message_id, client="c1", owner="c2")
    assert response.status_code == 403
    assert envelope_ok(response)["data"] is None
    # Its own name is harmless.
    assert api.status(message_id, client="c2", owner="c2").status_code == 200
    assert dead_letters(api, "c1", owner="c1") == dead_letters(api, "c1")
    assert replay(api, "c1", {"all": True}, owner="c2").status_code == 403


def test_admin_reads_another_clients_message_by_naming_it_and_is_logged(
    api: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = unique_id()
    assert api.submit(text(message_id, "for c2"), client="c2").status_code == 200
    assert api.status(message_id, client="ops").status_code == 404  # its own namespace
    with caplog.at_level(logging.INFO, logger="dispatcher.api.tenancy"):
        one = api.status(message_id, client="ops", owner="c2")
        many = api.status_many([message_id, unique_id()], client="ops", owner="c2")
    assert envelope_ok(one)["data"]["client"] == "c2"
    assert [r and r["client"] for r in envelope_ok(many)["data"]] == ["c2", None]
    logged = [r.getMessage() for r in caplog.records if message_id in r.getMessage()]
    assert logged == [f"admin client ops addresses getMessageId={message_id} of client c2"] * 2


def test_an_owner_that_is_no_client_id_is_400_naming_it(api: Harness) -> None:
    response = api.status(unique_id(), client="ops", owner="c2:x")
    assert response.status_code == 400
    assert "owner" in field_errors(response)


def test_owner_is_refused_on_submit_and_nothing_is_kept(api: Harness) -> None:
    message_id = unique_id()
    queued = api.queued()
    response = api.submit(text(message_id, "x"), client="ops", owner="c2")
    assert response.status_code == 400
    assert "owner" in field_errors(response)
    assert api.queued() == queued and not api.has_record(message_id)


def test_dead_letters_are_listed_per_client_and_all_of_them_for_an_admin(
    api: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = unique_id()
    make_dead(api, "c1", message_id)
    make_dead(api, "c2", message_id)

    def named(letters: list[dict[str, Any]]) -> list[str]:
        return sorted(d["client"] for d in letters if d["getMessageId"] == message_id)

    assert named(dead_letters(api, "c1")) == ["c1"]
    assert named(dead_letters(api, "c2")) == ["c2"]
    assert named(dead_letters(api, "ops")) == ["c1", "c2"]  # every client's, each named
    with caplog.at_level(logging.INFO, logger="dispatcher.api.tenancy"):
        assert named(dead_letters(api, "ops", owner="c2")) == ["c2"]
    assert "admin client ops reads dead letters of client c2" in caplog.text


def test_a_replay_reaches_the_callers_own_dead_letter_and_it_stays_its_own(api: Harness) -> None:
    message_id = unique_id()
    make_dead(api, "c1", message_id)
    make_dead(api, "c2", message_id)

    def state(client: str) -> bytes | None:
        value = api.redis.hget(keys.message(MessageRef(client, message_id)), "state")
        return value if isinstance(value, bytes) else None

    queued = api.queued()
    response = replay(api, "c1", {"getMessageIds": [message_id]})
    assert envelope_ok(response)["data"]["replayed"] == [
        {"getMessageId": message_id, "client": "c1"}
    ]
    assert (state("c1"), state("c2")) == (b"queued", b"dead")
    assert api.queued() == queued + 1
    # The queued task names c1's message: the worker delivers c1's, not c2's.
    task = json.loads(api.redis.lindex(api.settings.queue, 0) or b"{}")
    [args, _, _] = json.loads(base64.b64decode(task["body"]))
    assert args == [MessageRef("c1", message_id).member]

    # ``all`` from a plain client replays its own dead letters only.
    make_dead(api, "c1")
    replayed = envelope_ok(replay(api, "c2", {"all": True}))["data"]["replayed"]
    assert {entry["client"] for entry in replayed} == {"c2"}
    assert state("c2") == b"queued"


def test_an_admin_replays_another_clients_dead_letter_by_naming_it(api: Harness) -> None:
    message_id = make_dead(api, "c2")
    body = {"getMessageIds": [message_id]}
    skipped = envelope_ok(replay(api, "ops", body))["data"]["skipped"]
    assert skipped == [{"getMessageId": message_id, "client": "ops", "reason": "missing"}]
    replayed = envelope_ok(replay(api, "ops", body, owner="c2"))["data"]["replayed"]
    assert replayed == [{"getMessageId": message_id, "client": "c2"}]
    record = envelope_ok(api.status(message_id, client="c2"))["data"]
    assert record["state"] == "queued"
    assert record["history"][-1]["detail"] == "replayed from dead letters by ops"


def test_status_paths_hold_no_other_clients_answer(api: Harness) -> None:
    """The same request for an id of another client and for an unknown id: same answer."""
    foreign = api.submit(TEXT, client="c2").json()["data"]["getMessageId"]
    unknown = unique_id()
    answers = []
    for message_id in (foreign, unknown):
        response = api.status(message_id, client="c1")
        envelope = envelope_ok(response)
        answers.append((response.status_code, envelope["data"]))
    assert answers[0] == answers[1] == (404, None)


def test_the_producer_submits_in_its_configured_namespace(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCHER_PRODUCER_NAMESPACE", "c2")
    assert Settings().producer_namespace == "c2"
    producer = Dispatcher(api.settings.model_copy(update={"producer_namespace": "c2"}))
    try:
        message_id = producer.submit(text(unique_id(), "from python"))
        assert producer.status(message_id) is not None
        assert stored_text(api, "c2", message_id) == "from python"
        assert api.status(message_id, client="c2").status_code == 200
        assert api.status(message_id, client="c1").status_code == 404
        # Unset, it is the in-process default namespace, which no HTTP client sees unasked.
        default = Dispatcher(api.settings)
        assert default.namespace == DEFAULT_NAMESPACE
        assert default.status(message_id) is None
        assert default.status(MessageRef("c2", message_id)) is not None
        default.close()
    finally:
        producer.close()


@pytest.mark.parametrize("name", ["a:b", "a{b}", "", "x" * 65, "a b"])
def test_namespaces_and_client_ids_are_refused_when_they_could_break_a_key(name: str) -> None:
    with pytest.raises(ValidationError):
        Settings(producer_namespace=name)
    with pytest.raises(ValidationError, match="client id"):
        Settings(clients={name: {"secret": "s", "channels": ["c"]}})


def test_a_clients_replays_are_charged_to_its_submit_rate(redis_url: str) -> None:
    api = make_harness(redis_url, submit_rate_per_second=0.01, submit_burst=2)
    try:
        ids = [make_dead(api, "c1") for _ in range(3)]
        too_many = replay(api, "c1", {"getMessageIds": ids})
        assert too_many.status_code == 400 and "getMessageIds" in field_errors(too_many)
        assert envelope_ok(replay(api, "c1", {"getMessageIds": ids[:2]}))["data"]["replayed"]
        refused = replay(api, "c1", {"getMessageIds": ids[2:]})
        assert refused.status_code == 429 and refused.headers["Retry-After"]
        # An operator's replay is not a client's submit.
        replayed = envelope_ok(replay(api, "ops", {"getMessageIds": ids[2:]}, owner="c1"))
        assert replayed["data"]["replayed"] == [{"getMessageId": ids[2], "client": "c1"}]
    finally:
        api.close()
