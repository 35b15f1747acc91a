"""The doorbell end to end (docs/architecture.md, "The doorbell"): producer -> pending
list and ring -> a real worker process draining batches -> Easemob simulator."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.store import PendingLane
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, settings_from_env, wait_for_state

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


@pytest.fixture()
def worker_env(worker_env: dict[str, str]) -> dict[str, str]:
    return {**worker_env, "DISPATCHER_DELIVERY_BATCH": "8"}


@pytest.fixture()
def dispatcher(worker_env: dict[str, str]) -> Iterator[Any]:
    from dispatcher import Dispatcher

    d = Dispatcher(settings_from_env(worker_env))
    yield d
    d.close()


def text(n: int) -> dict[str, Any]:
    return {"messageType": 1, "from": "u1", "to": f"u{n}", "messageInfo": {"textMessage": "hi"}}


def sends(easemob: Any) -> Counter[str]:
    return Counter(
        (entry["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId")
        for entry in easemob.requests(MESSAGES_PATH)
    )


def test_a_backlog_is_delivered_in_batches_once_each_and_the_lane_is_left_clear(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    ids = [dispatcher.submit(text(n)) for n in range(40)]  # before any worker runs
    lane = PendingLane(dispatcher.settings.queue)
    assert dispatcher.redis.llen(lane.pending) == 40
    assert dispatcher.redis.llen(dispatcher.settings.queue) == 1, "one ring for the backlog"
    (backlog,) = dispatcher.queue_backlog()
    assert backlog.depth == 40
    start_worker(worker_concurrency=4)
    records = [wait_for_state(dispatcher, m, timeout=60) for m in ids]
    assert [r.state.value for r in records] == ["delivered"] * 40
    counted = sends(easemob)
    assert all(counted[m] == 1 for m in ids), counted
    assert dispatcher.redis.llen(lane.pending) == 0
    assert not dispatcher.redis.exists(lane.flag), "the last drain cleared the flag"


def test_a_lone_message_is_delivered_at_once_after_the_lane_went_quiet(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    first = dispatcher.submit(text(1))
    wait_for_state(dispatcher, first)
    lane = PendingLane(dispatcher.settings.queue)
    deadline = time.monotonic() + 10
    while dispatcher.redis.exists(lane.flag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not dispatcher.redis.exists(lane.flag)
    submitted = time.monotonic()
    lone = dispatcher.submit(text(2))
    record = wait_for_state(dispatcher, lone)
    took = time.monotonic() - submitted
    assert record.state.value == "delivered"
    assert took < 5, f"a lone message waited {took:.1f}s"
