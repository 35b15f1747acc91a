"""Scheduled sends on real Redis and worker processes: each message queued within a second
of its ``sendAt`` by whichever worker's scheduler gets it first, never twice, nothing held
by a worker, and nothing lost when every worker is SIGKILLed during the window.

The load is ``DISPATCHER_TEST_SCHEDULE_LOAD`` (``<messages>x<seconds>``, default
``800x15``); the acceptance size is ``10000x60``.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fault.harness import (
    Easemob,
    assert_invariants,
    new_id,
    records_of,
    text_message,
)

pytestmark = pytest.mark.fault

WORKERS = 4
MEMORY_BUDGET = 1536
"""Redis bytes a scheduled text message may cost while it waits (record, history, entry)."""
PROMOTED = "scheduled time reached"
"""How the history of a promotion begins (lua/promote_due.lua)."""
FAST_PROVIDER = {"calls_per_second": 100_000, "messages_per_minute": 10_000_000}
WORKER_SETTINGS = {
    "worker_concurrency": 2,
    "easemob_calls_per_second": 100_000,
    "easemob_messages_per_minute": 10_000_000,
}


@pytest.fixture()
def easemob(make_easemob: Callable[..., Easemob]) -> Easemob:
    """A provider that never throttles: the figures measure the schedule, not its quota."""
    return make_easemob(**FAST_PROVIDER)


def start_all(start_worker: Any) -> list[Any]:
    """:data:`WORKERS` workers started side by side, each running its scheduler."""
    workers = [start_worker(wait_ready=False, **WORKER_SETTINGS) for _ in range(WORKERS)]
    return [worker.wait_ready(60) for worker in workers]


def load() -> tuple[int, float]:
    count, _, seconds = os.environ.get("DISPATCHER_TEST_SCHEDULE_LOAD", "800x15").partition("x")
    return int(count), float(seconds)


def schedule_spread(dispatcher: Any, count: int, seconds: float, lead: float) -> dict[str, int]:
    """Submit ``count`` texts due evenly over ``seconds``, the first ``lead`` s from now;
    returns their due times (epoch ms) by id."""
    start = time.time() + lead
    due: dict[str, int] = {}
    for i in range(count):
        message_id = new_id("sch")
        at = int((start + seconds * i / count) * 1000)
        dispatcher.submit(text_message(message_id), send_at=at)
        due[message_id] = at
    return due


def promotion_lags(dispatcher: Any, due: dict[str, int]) -> list[float]:
    """Seconds from each message's due time to its ``queued`` entry; each queued once."""
    lags = []
    for message_id, record in records_of(dispatcher, list(due)).items():
        queued = [h for h in record.history if (h.detail or "").startswith(PROMOTED)]
        assert len(queued) == 1, f"{message_id} promoted {len(queued)} times: {record.history}"
        assert queued[0].state.value == "queued"
        assert record.scheduledFor is not None
        assert abs(record.scheduledFor.timestamp() * 1000 - due[message_id]) < 1
        lags.append(queued[0].at.timestamp() - due[message_id] / 1000)
    return lags


def wait_promoted(dispatcher: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while dispatcher.store.schedule.waiting():
        assert time.monotonic() < deadline, "scheduled messages left after their time"
        time.sleep(0.2)


def stored_bytes(dispatcher: Any) -> int:
    """Redis memory minus what is not data: the append-only file's and clients' buffers."""
    memory = dispatcher.redis.info("memory")
    buffers = ("mem_aof_buffer", "mem_clients_normal", "mem_clients_slaves")
    return int(memory["used_memory"]) - sum(int(memory.get(name, 0)) for name in buffers)


def held_by_workers(dispatcher: Any) -> dict[str, Any]:
    """What ``celery inspect scheduled`` lists per worker (ETA tasks held in memory)."""
    replies = dispatcher.celery.control.inspect(timeout=3).scheduled() or {}
    return {name: tasks for name, tasks in replies.items() if tasks}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def test_scheduled_messages_are_queued_within_a_second_of_their_time_once(
    dispatcher: Any, easemob: Easemob, start_worker: Any
) -> None:
    count, seconds = load()
    workers = start_all(start_worker)
    used_before = stored_bytes(dispatcher)
    due = schedule_spread(dispatcher, count, seconds, lead=3 + count / 1500)
    per_message = (stored_bytes(dispatcher) - used_before) / count
    assert dispatcher.redis.llen(dispatcher.settings.queue) == 0
    seen_replies = 0
    while dispatcher.store.schedule.waiting():
        assert held_by_workers(dispatcher) == {}
        seen_replies += 1
        time.sleep(1)
    wait_promoted(dispatcher, timeout=5)
    assert seen_replies > 0

    lags = promotion_lags(dispatcher, due)
    p50, p99 = statistics.median(lags), percentile(lags, 0.99)
    print(
        f"\n{count} messages over {seconds:.0f}s, {WORKERS} workers: promotion lag "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms; "
        f"{per_message:.0f} Redis bytes per scheduled message"
    )
    assert per_message <= MEMORY_BUDGET
    assert min(lags) >= 0, "a message was queued before its time"
    assert p99 < 1.0
    records = assert_invariants(dispatcher, easemob, list(due), timeout=60 + count / 50)
    assert {r.state.value for r in records.values()} == {"delivered"}
    assert all(easemob.reached()[m] == 1 for m in due)
    assert held_by_workers(dispatcher) == {}
    assert dispatcher.store.read.stats()["promoted"] == count
    assert len(workers) == WORKERS


def test_every_worker_sigkilled_during_the_window_loses_and_repeats_none(
    dispatcher: Any, easemob: Easemob, start_worker: Any
) -> None:
    count, seconds = 400, 20.0
    workers = start_all(start_worker)
    due = schedule_spread(dispatcher, count, seconds, lead=2)
    first_due = min(due.values()) / 1000
    time.sleep(max(0.0, first_due + seconds / 4 - time.time()))
    for worker in workers:
        worker.kill()
    killed_at = time.time()
    waiting = dispatcher.store.schedule.waiting()
    assert 0 < waiting < count, "the kill should fall inside the window"
    time.sleep(2)
    start_all(start_worker)
    running_again = time.time()
    wait_promoted(dispatcher, timeout=seconds + 30)

    lags = promotion_lags(dispatcher, due)  # each queued exactly once
    after_restart = [
        lag for m, lag in zip(due, lags, strict=True) if due[m] / 1000 > running_again + 0.5
    ]
    print(
        f"\nSIGKILL of all {WORKERS} workers with {waiting} of {count} still scheduled: "
        f"all queued once; lag max {max(lags):.1f}s (downtime included)"
    )
    assert after_restart and all(lag < 1.0 for lag in after_restart)
    assert all(lag < running_again - killed_at + 2 for lag in lags)
    records = assert_invariants(dispatcher, easemob, list(due), timeout=60)
    assert {r.state.value for r in records.values()} == {"delivered"}
