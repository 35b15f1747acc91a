"""Cancel and recall: the store's transitions on fakeredis, and recall against the Easemob
simulator over loopback HTTP (its window, its "not enabled", WeChat's lack of recall)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest

from dispatcher import keys
from dispatcher.channels.easemob import EasemobChannel
from dispatcher.channels.easemob.recall import RecallVerdict, read_answer
from dispatcher.config import Settings
from dispatcher.errors import NotFound, RecallRefused
from dispatcher.producer import Dispatcher
from dispatcher.record import State
from dispatcher.sandbox.easemob import create_easemob_app
from dispatcher.sandbox.server import ServerThread
from dispatcher.store import CancelOutcome, Lease, StandDown, StandDownReason
from dispatcher.webhooks.outbox import Event
from tests.conftest import (
    EASEMOB_APP,
    EASEMOB_CLIENT_ID,
    EASEMOB_CLIENT_SECRET,
    EASEMOB_ORG,
    outbox_keys,
    ref,
)

QUEUE = "withdraw-test"


def body(message_id: str, to: str = "u2") -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "u1",
        "to": to,
        "messageInfo": {"textMessage": "oops"},
        "getMessageId": message_id,
    }


def make_dispatcher(**settings: Any) -> Dispatcher:
    return Dispatcher(
        Settings(queue=QUEUE, memory_refuse_ratio=0, **settings), client=fakeredis.FakeRedis()
    )


@pytest.fixture()
def dispatcher() -> Dispatcher:
    return make_dispatcher()


def lease(d: Dispatcher, message_id: str) -> Lease:
    granted = d.store.lease.begin(ref(message_id), "w1:1", 30)
    assert isinstance(granted, Lease)
    return granted


@pytest.mark.parametrize("when", ["scheduled", "queued", "retrying"])
def test_a_message_not_sent_yet_is_cancelled_and_never_leased_again(
    dispatcher: Dispatcher, when: str
) -> None:
    send_at = int(time.time() * 1000) + 60_000 if when == "scheduled" else None
    dispatcher.submit(body("m0c"), send_at=send_at)
    if when == "retrying":
        from dispatcher.errors import ProviderError

        error = ProviderError("http_503", "busy", retryable=True)
        dispatcher.store.lease.mark_retrying(lease(dispatcher, "m0c"), error, 5, "retry")
    result = dispatcher.cancel("m0c", by="ops")
    assert (result.outcome, result.state, result.was) == (
        CancelOutcome.CANCELLED,
        State.CANCELLED,
        State(when),
    )
    record = dispatcher.status("m0c")
    assert record is not None and record.state == "cancelled"
    assert record.history[-1].detail == "cancelled by ops"
    expected = ["scheduled", "cancelled"] if when == "scheduled" else [when, "cancelled"]
    assert [h.state for h in record.history][-2:] == expected
    r = dispatcher.redis
    assert r.zscore(keys.shard_of(ref("m0c").member).schedule, ref("m0c").member) is None
    assert r.zscore(keys.shard_of(ref("m0c").member).inflight, ref("m0c").member) is None
    # Its task may still be in the broker: the lease refuses it.
    stood_down = dispatcher.store.lease.begin(ref("m0c"), "w2:1", 30)
    assert isinstance(stood_down, StandDown) and stood_down.reason is StandDownReason.TERMINAL
    again = dispatcher.cancel("m0c")
    assert (again.outcome, again.state) == (CancelOutcome.ALREADY_DONE, State.CANCELLED)
    assert dispatcher.store.read.stats()["state:cancelled"] == 1


def test_a_message_being_sent_or_done_is_not_cancelled_and_the_answer_says_why(
    dispatcher: Dispatcher,
) -> None:
    dispatcher.submit(body("m0busy"))
    held = lease(dispatcher, "m0busy")
    busy = dispatcher.cancel("m0busy")
    assert (busy.outcome, busy.state) == (CancelOutcome.IN_FLIGHT, State.PROCESSING)
    dispatcher.store.lease.mark_delivered(held, "1", "sent")
    done = dispatcher.cancel("m0busy")
    assert (done.outcome, done.state) == (CancelOutcome.ALREADY_DONE, State.DELIVERED)
    missing = dispatcher.cancel("m0never")
    assert (missing.outcome, missing.state) == (CancelOutcome.NOT_FOUND, None)


def test_a_cancelled_scheduled_message_is_never_promoted(dispatcher: Dispatcher) -> None:
    dispatcher.submit(body("m0sch"), send_at=int(time.time() * 1000) + 60_000)
    due = dispatcher.store.schedule.due(10).refs  # read just before the cancel
    dispatcher.redis.zadd(keys.shard_of(ref("m0sch").member).schedule, {ref("m0sch").member: 1})
    dispatcher.cancel("m0sch")
    assert dispatcher.store.schedule.promote(due, dispatcher.direct_enqueue).refs == []
    assert dispatcher.redis.llen(QUEUE) == 0


@pytest.mark.parametrize(
    ("status", "answer", "verdict"),
    [
        (200, {"data": {"recalled": "yes", "msg_id": "1"}}, RecallVerdict.RECALLED),
        (200, {"msgs": [{"msg_id": "1", "recalled": "exceed recall time limit"}]},
         RecallVerdict.WINDOW_PASSED),
        (200, {"msgs": [{"msg_id": "1", "recalled": "not_found msg"}]}, RecallVerdict.NOT_FOUND),
        (200, {"msgs": [{"msg_id": "1", "recalled": "internal error"}]}, RecallVerdict.FAILED),
        (403, {"error": "forbidden_op", "error_description": "message recall service is unopened"},
         RecallVerdict.NOT_ENABLED),
        (500, None, RecallVerdict.FAILED),
    ],
)  # fmt: skip
def test_easemob_recall_answers_are_read_into_verdicts(
    status: int, answer: Any, verdict: RecallVerdict
) -> None:
    assert read_answer(status, answer).verdict is verdict


# ---------------------------------------------------------------------------
# Recall against the simulator


@pytest.fixture()
def simulator() -> Iterator[Callable[..., str]]:
    servers: list[ServerThread] = []

    def start(**options: Any) -> str:
        app = create_easemob_app(
            org=EASEMOB_ORG,
            app=EASEMOB_APP,
            client_id=EASEMOB_CLIENT_ID,
            client_secret=EASEMOB_CLIENT_SECRET,
            **options,
        )
        servers.append(ServerThread(app).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()


def delivered_via(url: str, message_id: str, **settings: Any) -> Dispatcher:
    """A dispatcher on ``url`` whose message ``message_id`` was sent there and delivered."""
    d = make_dispatcher(
        easemob_base_url=url,
        easemob_org=EASEMOB_ORG,
        easemob_app=EASEMOB_APP,
        easemob_client_id=EASEMOB_CLIENT_ID,
        easemob_client_secret=EASEMOB_CLIENT_SECRET,
        **settings,
    )
    d.submit(body(message_id))
    held = lease(d, message_id)
    channel = EasemobChannel(d.settings, d.redis)
    receipt = channel.send(message_id, d.validate(body(message_id)))
    channel.close()
    d.store.lease.mark_delivered(held, receipt.provider_message_id, "sent")
    return d


def test_a_delivered_message_is_recalled_once(simulator: Callable[..., str]) -> None:
    d = delivered_via(simulator(), "m0rec")
    record = d.status("m0rec")
    assert record is not None and record.providerMessageId
    result = d.recall("m0rec", by="ops")
    assert result.state is State.RECALLED
    [recipient] = result.recipients
    assert (recipient.to, recipient.outcome) == ("u2", RecallVerdict.RECALLED)
    assert recipient.providerMessageId == record.providerMessageId
    after = d.status("m0rec")
    assert after is not None and after.state == "recalled"
    assert after.history[-1].detail == "recalled from u2 by ops"
    with pytest.raises(RecallRefused) as again:
        d.recall("m0rec")
    assert again.value.reason == "not_delivered"
    with pytest.raises(NotFound):
        d.recall("m0unknown")
    d.close()


def test_recall_after_the_providers_window_says_the_window_passed(
    simulator: Callable[..., str],
) -> None:
    d = delivered_via(simulator(recall_window=0.2), "m0late")
    time.sleep(0.3)
    with pytest.raises(RecallRefused) as refused:
        d.recall("m0late")
    assert refused.value.reason == "window_passed"
    assert refused.value.data["recipients"][0]["outcome"] == "window_passed"
    record = d.status("m0late")
    assert record is not None and record.state == "delivered"
    d.close()


def test_recall_after_our_configured_window_is_refused_without_calling_easemob(
    simulator: Callable[..., str],
) -> None:
    d = delivered_via(simulator(), "m0old", easemob_recall_window=0)
    time.sleep(0.01)
    with pytest.raises(RecallRefused, match=r"delivered more than 0 s ago") as refused:
        d.recall("m0old")
    assert refused.value.reason == "window_passed"
    d.close()


def test_recall_on_an_app_without_the_recall_service_says_not_enabled(
    simulator: Callable[..., str],
) -> None:
    d = delivered_via(simulator(recall_enabled=False), "m0off")
    with pytest.raises(RecallRefused) as refused:
        d.recall("m0off")
    assert refused.value.reason == "not_enabled"
    assert "not enabled" in refused.value.message
    d.close()


def test_wechat_messages_have_no_recall(dispatcher: Dispatcher) -> None:
    dispatcher.submit(body("m0wx"))
    dispatcher.redis.hset(keys.message(ref("m0wx")), "channel", "wechat")
    dispatcher.store.lease.mark_delivered(lease(dispatcher, "m0wx"), None, "sent")
    with pytest.raises(RecallRefused, match="the wechat channel has no recall") as refused:
        dispatcher.recall("m0wx")
    assert refused.value.reason == "not_supported"


WEBHOOK_SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"  # base64 of 27 bytes


def test_a_cancel_records_message_cancelled_for_a_subscribed_client_only() -> None:
    endpoint = {"url": "https://hooks.example/in", "secret": WEBHOOK_SECRET}
    d = make_dispatcher(
        clients={
            "alice": {"secret": "a", "webhooks": [{**endpoint, "events": ["message.cancelled"]}]},
            "bob": {"secret": "b", "webhooks": [{**endpoint, "events": ["message.delivered"]}]},
        }
    )
    d.submit(body("m0hook"), client="alice")
    d.submit(body("m0hook2"), client="bob")
    assert d.cancel("m0hook").outcome is CancelOutcome.CANCELLED
    assert d.cancel("m0hook2").outcome is CancelOutcome.CANCELLED
    [raw] = [r for key in outbox_keys() for r in d.redis.lrange(key, 0, -1)]
    event = Event.parse(raw.decode())
    assert (event.type, event.client, event.snapshot["state"]) == (
        "message.cancelled",
        "alice",
        "cancelled",
    )
    assert event.member.endswith(":m0hook")
