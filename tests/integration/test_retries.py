"""Retry rules (docs/reliability.md, "What is retried"), proven against the Easemob simulator with a real worker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import EASEMOB_APP, EASEMOB_ORG, wait_for_state

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"
TOKEN_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/token"


def text_message(message_id: str) -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "u1",
        "to": "u2",
        "messageInfo": {"textMessage": "retry me"},
        "getMessageId": message_id,
    }


def receipts(easemob: Any, message_id: str) -> list[dict[str, Any]]:
    return [
        entry
        for entry in easemob.requests(MESSAGES_PATH)
        if (entry["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId")
        == message_id
    ]


def new_id() -> str:
    return "t" + uuid.uuid4().hex


def test_two_503s_then_success_is_delivered_on_the_third_attempt(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    message_id = new_id()
    easemob.fault(
        path=MESSAGES_PATH,
        body_contains=message_id,
        status=503,
        body={"error": "service_unavailable", "error_description": "try later"},
        times=2,
    )
    dispatcher.submit(text_message(message_id))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered"
    assert record.attempts == 3
    assert len(receipts(easemob, message_id)) == 3
    states = [h.state for h in record.history]
    assert states == [
        "queued", "processing", "retrying", "processing", "retrying", "processing", "delivered",
    ]  # fmt: skip
    assert "503" in (record.history[2].detail or "")
    assert record.lastError is not None and record.lastError.retryable


def test_429_with_retry_after_delays_the_next_attempt_at_least_that_long(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    message_id = new_id()
    easemob.fault(
        path=MESSAGES_PATH,
        body_contains=message_id,
        status=429,
        body={"error": "reach_limit", "error_description": "This request has reached api limit"},
        retry_after=2,
        times=1,
    )
    dispatcher.submit(text_message(message_id))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered"
    first, second = receipts(easemob, message_id)
    assert second["receivedAt"] - first["receivedAt"] >= 2.0
    assert record.attempts == 2


def test_400_fails_at_once_without_retry(dispatcher: Any, easemob: Any, start_worker: Any) -> None:
    start_worker()
    message_id = new_id()
    easemob.fault(
        path=MESSAGES_PATH,
        body_contains=message_id,
        status=400,
        body={"error": "illegal_argument", "error_description": "from can't be empty"},
    )
    dispatcher.submit(text_message(message_id))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "failed"
    assert record.attempts == 1
    assert len(receipts(easemob, message_id)) == 1
    assert record.lastError is not None
    assert record.lastError.code == "illegal_argument"
    assert record.lastError.retryable is False
    assert "from can't be empty" in record.lastError.message


def test_401_refreshes_the_token_once_and_resends(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    warm = new_id()  # make sure a token is cached before the fault
    dispatcher.submit(text_message(warm))
    assert wait_for_state(dispatcher, warm).state == "delivered"
    token_calls_before = len(easemob.requests(TOKEN_PATH))

    message_id = new_id()
    easemob.fault(
        path=MESSAGES_PATH,
        body_contains=message_id,
        status=401,
        body={
            "error": "unauthorized",
            "error_description": "Unable to authenticate due to expired access token",
        },
        times=1,
    )
    dispatcher.submit(text_message(message_id))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered"
    assert record.attempts == 1
    assert len(receipts(easemob, message_id)) == 2
    assert len(easemob.requests(TOKEN_PATH)) == token_calls_before + 1
    assert "token refreshed after 401" in (record.history[-1].detail or "")


def test_retryable_errors_end_dead_when_attempts_run_out(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker(max_attempts="3")
    message_id = new_id()
    easemob.fault(path=MESSAGES_PATH, body_contains=message_id, status=503, body={"error": "down"})
    dispatcher.submit(text_message(message_id))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "dead"
    assert record.attempts == 3
    assert len(receipts(easemob, message_id)) == 3
    assert message_id in [r.id for r, _ in dispatcher.store.read.dead_letters(limit=1000)]

    easemob.clear()
    assert dispatcher.replay(message_id) == "ok"
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered"
    assert len(receipts(easemob, message_id)) == 1
    assert message_id not in [r.id for r, _ in dispatcher.store.read.dead_letters(limit=1000)]


def test_lost_response_is_retried_and_recorded_as_ambiguous(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    message_id = new_id()
    easemob.fault(
        path=MESSAGES_PATH, body_contains=message_id, after_handling=True, reset=True, times=1
    )
    dispatcher.submit(text_message(message_id))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered"
    assert len(receipts(easemob, message_id)) == 2
    retry = next(h for h in record.history if h.state == "retrying")
    assert (retry.detail or "").startswith("ambiguous:")


def test_each_attempt_is_timed_for_its_channels_histogram(
    dispatcher: Any, easemob: Any, start_worker: Any, redis_client: Any
) -> None:
    from dispatcher.store import ReadStore

    fields = ("attempt:easemob:count", "attempt:easemob:le:60000")

    def counted() -> list[int]:
        stats = ReadStore(redis_client).stats()
        return [stats.get(field, 0) for field in fields]

    before = counted()
    start_worker()
    message_id = new_id()
    easemob.fault(path=MESSAGES_PATH, body_contains=message_id, status=503, times=1)
    dispatcher.submit(text_message(message_id))
    assert wait_for_state(dispatcher, message_id).attempts == 2
    # The first attempt is added at once, the retry within the worker's flush interval.
    # The hash is the whole test run's: a worker of an earlier test that flushes late adds
    # its own, so both ours must show (at least two more), each under the 60 s bucket.
    deadline = time.monotonic() + 10
    while True:
        count, fast = (now - then for now, then in zip(counted(), before, strict=True))
        if count >= 2 and fast == count:
            break
        assert time.monotonic() < deadline, (counted(), before)
        time.sleep(0.05)
