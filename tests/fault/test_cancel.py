"""Cancel on real Redis and worker processes: racing an attempt that is starting, and
cancelling while the message's task is still in the broker."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any

import pytest

from dispatcher.store import CancelOutcome
from tests.fault.harness import (
    MESSAGES_PATH,
    Easemob,
    new_id,
    text_message,
    wait_all_terminal,
)

pytestmark = pytest.mark.fault

TRIALS = 1000


def held_by_workers(dispatcher: Any) -> dict[str, Any]:
    replies = dispatcher.celery.control.inspect(timeout=3).scheduled() or {}
    return {name: tasks for name, tasks in replies.items() if tasks}


def test_a_cancel_racing_a_starting_attempt_never_ends_cancelled_and_sent(
    dispatcher: Any, easemob: Easemob, start_worker: Any
) -> None:
    start_worker(easemob_calls_per_second=100_000, easemob_messages_per_minute=10_000_000)
    easemob.fault(path=MESSAGES_PATH, latency=0.01)  # a send takes a while: cancels land in it
    rng = random.Random(20261129)
    answers: dict[str, CancelOutcome] = {}
    for _ in range(TRIALS):
        message_id = new_id("race")
        dispatcher.submit(text_message(message_id))
        time.sleep(rng.uniform(0, 0.03))
        answers[message_id] = dispatcher.cancel(message_id).outcome
    records = wait_all_terminal(dispatcher, list(answers), timeout=120)
    reached = easemob.reached()

    for message_id, answer in answers.items():
        state = records[message_id].state.value
        if answer is CancelOutcome.CANCELLED:
            assert state == "cancelled" and reached[message_id] == 0, message_id
        else:
            assert answer in (CancelOutcome.IN_FLIGHT, CancelOutcome.ALREADY_DONE)
            assert state == "delivered" and reached[message_id] == 1, message_id
    spread = Counter(answer.value for answer in answers.values())
    print(f"\n{TRIALS} cancels racing a worker: {dict(spread)}; none both cancelled and sent")
    # The timing really raced: every answer occurred.
    assert all(spread[o.value] > 0 for o in CancelOutcome if o is not CancelOutcome.NOT_FOUND)
    assert held_by_workers(dispatcher) == {}


def test_a_message_cancelled_while_its_task_is_in_the_broker_is_not_sent(
    dispatcher: Any, easemob: Easemob, start_worker: Any
) -> None:
    ids = [new_id("held") for _ in range(20)]
    for message_id in ids:
        dispatcher.submit(text_message(message_id))
    queue = dispatcher.settings.queue
    assert dispatcher.redis.llen(queue) == len(ids)  # every task is in the broker
    assert {dispatcher.cancel(m).outcome for m in ids} == {CancelOutcome.CANCELLED}

    sentinel = new_id("sent")
    dispatcher.submit(text_message(sentinel))
    start_worker()
    wait_all_terminal(dispatcher, [sentinel], timeout=60)
    deadline = time.monotonic() + 30
    while dispatcher.redis.llen(queue) or dispatcher.redis.hlen("unacked"):
        assert time.monotonic() < deadline, "the cancelled messages' tasks were not consumed"
        time.sleep(0.1)
    assert easemob.reached()[sentinel] == 1
    assert all(easemob.reached()[m] == 0 for m in ids)
    for message_id in ids:
        record = dispatcher.status(message_id)
        assert record is not None and record.state.value == "cancelled"
        assert [h.state.value for h in record.history] == ["queued", "cancelled"]
