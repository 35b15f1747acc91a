"""F21: multi-recipient messages, end to end (real Redis, worker processes, the Easemob
simulator over HTTP): split into calls of 600, a recipient never sent to twice, partial
delivery when some recipients fail for good."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dispatcher.ids import MessageRef
from dispatcher.store.recipients import RecipientState
from tests.fault.harness import MESSAGES_PATH, Easemob, new_id, wait_until

pytestmark = pytest.mark.fault

FAST = 600_000
"""Messages per minute of the simulator and the workers here: a 600-recipient call's share
of the quota is 0.06 s, so the tests wait for calls, not for the quota."""


@pytest.fixture()
def easemob(make_easemob: Any) -> Easemob:
    simulator: Easemob = make_easemob(messages_per_minute=FAST)
    return simulator


def fanout_message(message_id: str, recipients: list[str]) -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "announcer",
        "to": recipients,
        "messageInfo": {"textMessage": "an announcement"},
        "getMessageId": message_id,
    }


def users(count: int, prefix: str = "user") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def deliveries(easemob: Easemob) -> dict[str, int]:
    reply = httpx.get(f"{easemob.url}/_sandbox/easemob/deliveries", timeout=10)
    return dict(reply.raise_for_status().json())


def wait_state(dispatcher: Any, message_id: str, states: set[str], timeout: float) -> Any:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found["record"] = record = dispatcher.status(message_id)
        return record is not None and record.state.value in states

    wait_until(reached, timeout, f"{message_id} in {sorted(states)}")
    return found["record"]


def all_recipients(dispatcher: Any, message_id: str, state: RecipientState | None) -> list[Any]:
    return list(dispatcher.recipients(MessageRef.parse(message_id), state))


def counts(record: Any) -> tuple[int, int, int, int]:
    """recipients, delivered, failed, pending of a status record."""
    c = record.recipients
    assert c is not None
    return (c.recipients, c.delivered, c.failed, c.pending)


def arrived(easemob: Easemob, message_id: str) -> int:
    """Send calls of the message the simulator has received so far, answered or not."""
    reply = httpx.get(f"{easemob.url}/_sandbox/requests", timeout=10).raise_for_status()
    return sum(
        1
        for entry in reply.json()
        if entry["path"] == MESSAGES_PATH
        and (entry.get("json") or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId")
        == message_id
    )


def send_calls(easemob: Easemob, message_id: str) -> list[Any]:
    return easemob.receipts(message_id)


def test_2500_recipients_go_out_in_5_calls_each_recipient_once(
    dispatcher: Any, easemob: Easemob, start_worker: Any
) -> None:
    start_worker(easemob_messages_per_minute=FAST)
    names = users(2500)
    message_id = dispatcher.submit(fanout_message(new_id("fan"), names))

    record = wait_state(dispatcher, message_id, {"delivered", "partially_delivered"}, 60)

    assert record.state.value == "delivered", record.history
    calls = send_calls(easemob, message_id)
    assert [c.status for c in calls] == [200] * 5
    received = deliveries(easemob)
    assert received == dict.fromkeys(names, 1)
    assert counts(record) == (2500, 2500, 0, 0)
    outcomes = all_recipients(dispatcher, message_id, RecipientState.DELIVERED)
    ids = {o.to: o.providerMessageId for o in outcomes}
    assert set(ids) == set(names)
    assert len(set(ids.values())) == 2500 and all(i and i.isdigit() for i in ids.values())


def test_503_then_sigkill_mid_fanout_delivers_every_recipient_exactly_once(
    dispatcher: Any, easemob: Easemob, start_worker: Any, fault_env: dict[str, str]
) -> None:
    settings = {"easemob_messages_per_minute": FAST, "easemob_timeout": 10}
    worker = start_worker(**settings)
    # The 2nd call is answered 503; the 3rd (the retry's first) hangs until the kill.
    easemob.fault(path=MESSAGES_PATH, status=503, skip=1, times=1)
    easemob.fault(path=MESSAGES_PATH, hang=60, skip=2, times=1)
    names = users(1300)
    message_id = dispatcher.submit(fanout_message(new_id("kill"), names))

    # The simulator's own ledger records a call as it arrives (the receipts, as answered).
    wait_until(lambda: arrived(easemob, message_id) >= 3, 60, "the third call's arrival")
    during = dispatcher.status(message_id)
    worker.kill()
    start_worker(**settings)

    record = wait_state(dispatcher, message_id, {"delivered", "partially_delivered"}, 90)
    assert during.recipients.delivered == 600 and during.state.value == "processing"
    assert record.state.value == "delivered", record.history
    assert deliveries(easemob) == dict.fromkeys(names, 1)
    statuses = [c.status for c in send_calls(easemob, message_id)]
    assert statuses[:2] == [200, 503] and statuses[-2:] == [200, 200], statuses
    assert counts(record) == (1300, 1300, 0, 0)


def test_three_refused_recipients_end_partially_delivered_listing_exactly_them(
    dispatcher: Any, easemob: Easemob, start_worker: Any
) -> None:
    names = users(700)
    refused = {names[5]: "user blocked", names[333]: "user blocked", names[650]: "gone"}
    httpx.post(
        f"{easemob.url}/_sandbox/easemob/failing-targets", json={"targets": refused}, timeout=10
    ).raise_for_status()
    start_worker(easemob_messages_per_minute=FAST)
    message_id = dispatcher.submit(fanout_message(new_id("part"), names))

    record = wait_state(dispatcher, message_id, {"delivered", "partially_delivered", "failed"}, 60)

    assert record.state.value == "partially_delivered", record.history
    assert counts(record) == (700, 697, 3, 0)
    failed = all_recipients(dispatcher, message_id, RecipientState.FAILED)
    assert sorted(o.to for o in failed) == sorted(refused)
    assert all(o.error and o.error.startswith("refused:") for o in failed)
    assert deliveries(easemob) == {n: 1 for n in names if n not in refused}
    assert [c.status for c in send_calls(easemob, message_id)] == [200, 200]
