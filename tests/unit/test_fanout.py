"""Multi-recipient messages without workers: the ``to`` list's validation, the compact
per-recipient store and its counts, the recipients endpoint and its client isolation,
and the Easemob simulator's per-call caps and per-target refusals."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher import keys
from dispatcher.api.paths import RECIPIENTS
from dispatcher.errors import InvalidMessage
from dispatcher.ids import MessageRef
from dispatcher.limits import MAX_USER_RECIPIENTS
from dispatcher.models import parse_message
from dispatcher.sandbox.easemob import create_easemob_app
from dispatcher.store import Lease, StatusStore, Transition
from dispatcher.store.policy import StorePolicy
from dispatcher.store.recipients import SLOT, RecipientState, delivered, failed
from dispatcher.webhooks.outbox import Event
from dispatcher.webhooks.send import build_body
from tests.unit.test_api_support import TEXT, Harness, envelope_ok, make_harness

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def to_list(recipients: Any, **extra: Any) -> dict[str, Any]:
    return {**TEXT, "to": recipients, **extra}


def errors_of(payload: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(payload)
    return {e.field: e.error for e in caught.value.errors}


def test_a_plain_string_stays_one_recipient_and_a_list_fans_out() -> None:
    one = parse_message(TEXT)
    many = parse_message(to_list(["a", "b"]))
    assert (one.fans_out, one.recipients) == (False, ["u_receiver"])
    assert (many.fans_out, many.recipients, many.target_type) == (True, ["a", "b"], "users")
    groups = parse_message(to_list(["1001", "1002"]))
    assert groups.target_type == "chatgroups"


@pytest.mark.parametrize(
    ("recipients", "target_type", "says"),
    [
        ([], None, "at least one recipient"),
        (["a", "a"], None, "item 1: 'a' is named twice"),
        (["ok", "has space"], None, "item 1"),
        (["x" * 65], None, "item 0"),
        ([f"u{i}" for i in range(MAX_USER_RECIPIENTS + 1)], None, "at most 10000 recipients"),
        ([str(i) for i in range(101)], None, "at most 100 groups"),
        ([f"g{i}" for i in range(101)], "chatgroups", "at most 100 groups"),
        (42, None, "a recipient id or a list"),
    ],
)
def test_a_bad_to_list_is_refused_naming_the_field(
    recipients: Any, target_type: str | None, says: str
) -> None:
    extra = {"targetType": target_type} if target_type else {}
    errors = errors_of(to_list(recipients, **extra))
    assert says in errors["to"], errors


def test_ten_thousand_users_are_accepted() -> None:
    message = parse_message(to_list([f"user{i}" for i in range(MAX_USER_RECIPIENTS)]))
    assert len(message.recipients) == MAX_USER_RECIPIENTS


def submit_list(api: Harness, recipients: list[str], client: str = "c1") -> str:
    response = api.submit(to_list(recipients), client=client)
    assert response.status_code == 200, response.text
    return str(response.json()["data"]["getMessageId"])


def recipients_page(api: Harness, message_id: str, client: str = "c1", **query: Any) -> Any:
    path = RECIPIENTS.format(getMessageId=message_id)
    params = api.params(b"", method="GET", path=path, client=client, **query)
    return api.http.get(path, params=params)


def test_a_10000_recipient_submit_fits_through_the_api_and_counts_show(api: Harness) -> None:
    names = [f"user{i:05d}" for i in range(MAX_USER_RECIPIENTS)]
    message_id = submit_list(api, names)
    record = envelope_ok(api.status(message_id))["data"]
    ref = MessageRef("c1", message_id)
    store = api.app.state.runtime.dispatcher.store
    store.recipients.record(ref, [(i, delivered(str(10**18 + i))) for i in range(600)])
    bytes_per_recipient = api.redis.memory_usage(keys.recipients(ref), samples=0) / 10_000
    assert bytes_per_recipient <= 64, bytes_per_recipient
    assert record["to"] is None
    assert record["recipients"] == {
        "recipients": 10000,
        "delivered": 0,
        "failed": 0,
        "pending": 10000,
    }


def test_outcomes_are_recorded_once_and_counted(api: Harness) -> None:
    names = ["a", "b", "c", "d"]
    message_id = submit_list(api, names)
    store = api.app.state.runtime.dispatcher.store
    ref = MessageRef("c1", message_id)
    assert store.recipients.pending(ref, 4) == [0, 1, 2, 3]
    counts = store.recipients.record(ref, [(0, delivered("1234567890123456789")), (2, failed("x"))])
    assert (counts.delivered, counts.failed, counts.pending) == (1, 1, 2)
    # A re-run (lost reply) changes nothing; a delivery is never overwritten; a late
    # delivery of a failed recipient is a fact and wins.
    again = store.recipients.record(ref, [(0, delivered("99")), (2, delivered("77"))])
    assert (again.delivered, again.failed) == (2, 0)
    assert store.recipients.pending(ref, 4) == [1, 3]
    page = store.recipients.page(ref, state=RecipientState.DELIVERED, cursor=0, limit=10)
    assert [(o.to, o.providerMessageId) for o in page.outcomes] == [
        ("a", "1234567890123456789"),
        ("c", "77"),
    ]
    assert api.redis.ttl(keys.recipients(ref)) > 0


def test_the_recipients_endpoint_pages_and_filters_and_isolates_clients(api: Harness) -> None:
    names = [f"r{i}" for i in range(25)]
    message_id = submit_list(api, names)
    store = api.app.state.runtime.dispatcher.store
    ref = MessageRef("c1", message_id)
    store.recipients.record(ref, [(i, delivered(str(1000 + i))) for i in range(20)])
    store.recipients.record(ref, [(21, failed("refused:gone"))])

    first = envelope_ok(recipients_page(api, message_id, limit="10"))["data"]
    assert [r["to"] for r in first["recipients"]] == names[:10]
    assert first["recipients"][3] == {"to": "r3", "state": "delivered", "providerMessageId": "1003"}
    seen, cursor = list(first["recipients"]), first["nextCursor"]
    while cursor is not None:
        page = envelope_ok(recipients_page(api, message_id, limit="10", cursor=str(cursor)))
        seen += page["data"]["recipients"]
        cursor = page["data"]["nextCursor"]
    assert [r["to"] for r in seen] == names
    failed_only = envelope_ok(recipients_page(api, message_id, state="failed"))["data"]
    assert failed_only["recipients"] == [{"to": "r21", "state": "failed", "error": "refused:gone"}]
    pending = envelope_ok(recipients_page(api, message_id, state="pending"))["data"]
    assert [r["to"] for r in pending["recipients"]] == ["r20", "r22", "r23", "r24"]

    # Another client sees nothing, exactly as for an unknown id.
    assert recipients_page(api, message_id, client="c2").status_code == 404
    single = api.submit(TEXT).json()["data"]["getMessageId"]
    assert recipients_page(api, single).status_code == 404


def easemob_client(**options: Any) -> TestClient:
    app = create_easemob_app(org="o", app="a", client_id="id", client_secret="s", **options)
    client = TestClient(app)
    token = client.post(
        "/o/a/token",
        json={"grant_type": "client_credentials", "client_id": "id", "client_secret": "s"},
    ).json()["access_token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def send(client: TestClient, target_type: str, targets: list[str]) -> httpx.Response:
    body = {"target_type": target_type, "target": targets, "msg": {"type": "txt", "msg": "x"}}
    response: httpx.Response = client.post("/o/a/messages?useMsgId=true", json=body)
    return response


def test_the_simulator_enforces_per_call_caps_and_answers_an_id_per_target() -> None:
    client = easemob_client(messages_per_minute=100_000)
    users = [f"user{i:060d}" for i in range(600)]  # long ids: the cap, not the size, refuses
    answered = send(client, "users", users)
    assert answered.status_code == 200, answered.text
    ids = answered.json()["data"]
    assert set(ids) == set(users) and len(set(ids.values())) == 600
    over = send(client, "users", [*users, "one-more"])
    assert over.status_code == 400
    assert over.json()["error_description"] == "params to's size can't exceed limit"
    assert send(client, "chatgroups", ["1", "2", "3"]).status_code == 200
    assert send(client, "chatgroups", ["1", "2", "3", "4"]).status_code == 400


def test_the_simulator_refuses_chosen_targets_and_fails_the_nth_call() -> None:
    client = easemob_client()
    client.post("/_sandbox/easemob/failing-targets", json={"targets": {"b": "user blocked"}})
    client.post("/_sandbox/faults", json={"path": "/messages$", "status": 503, "skip": 1})
    first = send(client, "users", ["a", "b"])
    assert first.json()["data"]["b"] == "user blocked"
    assert first.json()["data"]["a"].isdigit()
    assert send(client, "users", ["c"]).status_code == 503
    assert client.get("/_sandbox/easemob/deliveries").json() == {"a": 1}


def test_the_compact_slot_is_twenty_bytes() -> None:
    assert len(delivered("1029457500870543736")) == SLOT == 20
    assert len(failed("a-very-long-error-code-indeed")) == SLOT


def test_a_partially_delivered_end_is_announced_with_the_counts(api: Harness) -> None:
    message_id = submit_list(api, ["a", "b", "c"])
    ref = MessageRef("c1", message_id)
    store = StatusStore(
        api.redis, StorePolicy(announced=frozenset({("c1", "message.partially_delivered")}))
    )
    lease = store.lease.begin(ref, "owner-1", 30)
    assert isinstance(lease, Lease)
    store.recipients.record(ref, [(0, delivered("11")), (1, delivered("12")), (2, failed("x"))])
    assert store.lease.mark_partially_delivered(lease, "2 of 3") is Transition.OK

    raw = api.redis.lindex(keys.shard_of(ref).outbox, -1)
    event = Event.parse(raw.decode())
    data = json.loads(build_body(event, message_id))["data"]
    assert event.type == "message.partially_delivered"
    assert data["state"] == "partially_delivered"
    assert data["recipients"] == {"recipients": 3, "delivered": 2, "failed": 1, "pending": 0}
    record = envelope_ok(api.status(message_id))["data"]
    assert record["state"] == "partially_delivered"
