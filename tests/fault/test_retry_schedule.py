"""A retry waits in the status store's schedule, not in a worker: on real Redis (and
RabbitMQ) with real worker processes, a message answered 503 with a backoff of a few
seconds survives SIGKILL of every worker and is sent again at its due time, once, by the
workers started after (docs/architecture.md, "Scheduled delivery").
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.ids import MessageRef
from tests.conftest import EASEMOB_APP, EASEMOB_ORG
from tests.fault.harness import (
    BOTH_BROKERS,
    assert_invariants,
    new_id,
    text_message,
    wait_until,
)

pytestmark = pytest.mark.fault

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"
DOWN = {"error": "service_unavailable", "error_description": "try later"}
BACKOFF = 15.0
"""The provider's Retry-After: the retry's due time, long enough for new workers to start
(on an idle machine)."""
ON_TIME = 2.0
"""Seconds after its due time by which the retry has reached the provider: the promotion,
the broker, a worker's lease and the send, on a shared machine."""


def held_by_workers(dispatcher: Any) -> dict[str, Any]:
    """What ``celery inspect scheduled`` lists per worker (ETA tasks held in memory)."""
    replies = dispatcher.celery.control.inspect(timeout=3).scheduled() or {}
    return {name: tasks for name, tasks in replies.items() if tasks}


WORKERS = 2


def ref_of(dispatcher: Any, message_id: str) -> MessageRef:
    return MessageRef(dispatcher.namespace, message_id)


@BOTH_BROKERS
def test_a_retrying_message_survives_sigkill_of_every_worker_and_is_retried_at_its_time(
    dispatcher: Any, easemob: Any, start_worker: Any, broker: str
) -> None:
    workers = [start_worker(wait_ready=False) for _ in range(WORKERS)]
    for worker in workers:
        worker.wait_ready(60)
    message_id = new_id("retry")
    member = ref_of(dispatcher, message_id).member
    easemob.fault(
        path=MESSAGES_PATH,
        body_contains=message_id,
        status=503,
        body=DOWN,
        retry_after=BACKOFF,
        times=1,
    )
    dispatcher.submit(text_message(message_id))

    def retrying() -> bool:
        record = dispatcher.status(message_id)
        return record is not None and record.state.value == "retrying"

    wait_until(retrying, 30, "the 503 recorded as a retry")
    due_ms = int(dispatcher.redis.hget(keys.message(ref_of(dispatcher, message_id)), "dueAt"))
    assert dispatcher.redis.zscore(keys.shard_of(member).schedule, member) == due_ms, (
        "waits in the schedule"
    )
    assert dispatcher.redis.zscore(keys.shard_of(member).inflight, member) is None, (
        "not the reaper's"
    )
    assert held_by_workers(dispatcher) == {}, "no worker holds the retry"

    for worker in workers:
        worker.kill()
    killed_at = time.time()
    assert killed_at < due_ms / 1000, "the kill should fall inside the backoff"
    again = [start_worker(wait_ready=False) for _ in range(WORKERS)]
    for worker in again:
        worker.wait_ready(60)
    running_again = time.time()
    if running_again < due_ms / 1000:
        assert held_by_workers(dispatcher) == {}, "the new workers hold nothing either"

    records = assert_invariants(dispatcher, easemob, [message_id], timeout=BACKOFF + 30)
    record = records[message_id]
    first, second = easemob.receipts(message_id)
    lag = second.received_at - due_ms / 1000
    # On a loaded machine the new workers may come up after the due time: then the retry
    # is due at once, and "on time" counts from when they were running.
    late = second.received_at - max(due_ms / 1000, running_again)
    print(
        f"\n{broker} broker: retry due {BACKOFF:.0f}s after the 503, every worker SIGKILLed "
        f"{due_ms / 1000 - killed_at:.1f}s before it, new workers up "
        f"{running_again - killed_at:.1f}s after the kill; sent again {lag * 1000:.0f} ms "
        f"after its due time ({late * 1000:.0f} ms after it could be), once"
    )
    assert (first.status, second.status) == (503, 200)
    assert easemob.reached()[message_id] == 1, "delivered exactly once"
    assert lag >= 0, "the retry ran before its due time"
    assert late < ON_TIME, f"the retry ran {late:.2f}s after it could"
    assert record.state.value == "delivered" and record.attempts == 2
    states = [h.state.value for h in record.history]
    assert states == ["queued", "processing", "retrying", "processing", "delivered"], states
    assert dispatcher.redis.zscore(keys.shard_of(member).schedule, member) is None
