"""F1, F2, F13: workers that die, outlive the visibility timeout, or are stopped by a deploy."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.fault.harness import (
    BOTH_BROKERS,
    MESSAGES_PATH,
    assert_invariants,
    records_of,
    submit_texts,
)

pytestmark = pytest.mark.fault

SLOW = 3.0  # seconds the provider takes per send while the fault is on


def wait_processing(dispatcher: Any, ids: list[str], at_least: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = records_of(dispatcher, ids)
        busy = [m for m, r in records.items() if r is not None and r.state.value == "processing"]
        if len(busy) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} of {len(ids)} messages reached processing")


@BOTH_BROKERS
def test_sigkilled_worker_main_process_is_recovered_within_the_lease(
    dispatcher: Any, easemob: Any, start_worker: Any, fault_env: dict[str, str], broker: str
) -> None:
    lease = float(fault_env["DISPATCHER_LEASE_SECONDS"])
    reaper = float(fault_env["DISPATCHER_REAPER_INTERVAL"])
    worker = start_worker()
    easemob.fault(path=MESSAGES_PATH, latency=SLOW)
    ids = submit_texts(dispatcher, 12, prefix="kill")
    wait_processing(dispatcher, ids, at_least=8)

    worker.kill()
    killed_at = time.monotonic()
    easemob.clear_faults()
    start_worker()

    records = assert_invariants(dispatcher, easemob, ids, timeout=lease + 30)
    recovery = max(r.updatedAt for r in records.values()).timestamp() - (
        time.time() - (time.monotonic() - killed_at)
    )
    print(
        f"\nF1 main process SIGKILL, {broker} broker: all {len(ids)} terminal {recovery:.1f}s after the kill "
        f"(lease {lease:.0f}s, reaper every {reaper:.0f}s, worker timeout 10s)"
    )
    assert all(r.state.value == "delivered" for r in records.values())
    taken_over = [r for r in records.values() if "took over" in str([h.detail for h in r.history])]
    assert taken_over, "the killed attempts were taken over after their lease"
    assert recovery <= lease + 3 * reaper + 8, f"recovery took {recovery:.1f}s"


@BOTH_BROKERS
def test_sigkilled_prefork_child_is_recovered_within_the_lease(
    dispatcher: Any, easemob: Any, start_worker: Any, fault_env: dict[str, str], broker: str
) -> None:
    lease = float(fault_env["DISPATCHER_LEASE_SECONDS"])
    reaper = float(fault_env["DISPATCHER_REAPER_INTERVAL"])
    # Celery reads an explicit "--pool prefork" as its default and lets the configured
    # pool (threads) win, so the pool is chosen through the setting.
    worker = start_worker("-c", "2", worker_pool="prefork")
    children = worker.children()
    assert len(children) == 2, f"expected two pool processes, found {children}"
    easemob.fault(path=MESSAGES_PATH, latency=SLOW)
    ids = submit_texts(dispatcher, 4, prefix="child")
    wait_processing(dispatcher, ids, at_least=2)

    victim = children[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    easemob.clear_faults()

    records = assert_invariants(dispatcher, easemob, ids, timeout=lease + 30)
    recovery = max(r.updatedAt for r in records.values()).timestamp() - (
        time.time() - (time.monotonic() - killed_at)
    )
    print(
        f"\nF1 prefork child SIGKILL, {broker} broker: all {len(ids)} terminal {recovery:.1f}s after the kill "
        f"(lease {lease:.0f}s)"
    )
    assert worker.alive(), "the worker's main process survives the loss of a child"
    assert victim not in worker.children(), "the killed child was replaced"
    assert len(worker.children()) == 2
    assert all(r.state.value == "delivered" for r in records.values())
    assert recovery <= lease + 3 * reaper + 8, f"recovery took {recovery:.1f}s"


def test_redelivered_copy_stands_down_when_the_live_attempt_outlives_the_visibility_timeout(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    # The lease (20 s) outlasts the slow send (6 s), which outlasts the visibility timeout (2 s).
    settings = {"visibility_timeout": 2, "lease_seconds": 20, "easemob_timeout": 10}
    workers = [start_worker(**settings), start_worker(**settings)]
    easemob.fault(path=MESSAGES_PATH, latency=6.0)
    ids = submit_texts(dispatcher, 3, prefix="vis")

    records = assert_invariants(dispatcher, easemob, ids, timeout=40)
    assert all(r.state.value == "delivered" for r in records.values())
    assert all(easemob.reached()[m] == 1 for m in ids), "one send per id"
    logs = "".join(w.log() for w in workers)
    stood_down = [m for m in ids if f"getMessageId={m} standing down: held by" in logs]
    assert stood_down, "Celery redelivered the unacked tasks and the copies stood down"


@BOTH_BROKERS
def test_sigterm_to_all_workers_requeues_in_flight_work_at_once(
    dispatcher: Any, easemob: Any, start_worker: Any, broker: str
) -> None:
    # No reaper, long graces and the old hour-long visibility timeout: only the shutdown
    # itself may bring the work back.
    settings = {
        "visibility_timeout": 3600,
        "reaper_interval": 0,
        "queued_grace": 3600,
        "retry_grace": 3600,
        "lease_seconds": 60,
        "shutdown_grace": 3,
        "easemob_timeout": 10,
    }
    first = [start_worker(**settings), start_worker(**settings)]
    easemob.fault(path=MESSAGES_PATH, latency=2.0)
    ids = submit_texts(dispatcher, 40, prefix="term")
    wait_processing(dispatcher, ids, at_least=8)

    for worker in first:
        worker.signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    for worker in first:
        assert worker.process is not None
        worker.process.wait(30)
    stop_took = time.monotonic() - stopped_at
    easemob.clear_faults()
    start_worker(**settings)
    start_worker(**settings)

    records = assert_invariants(dispatcher, easemob, ids, timeout=40)
    done_in = time.monotonic() - stopped_at
    print(
        f"\nF13 SIGTERM, {broker} broker: workers stopped in {stop_took:.1f}s, all {len(ids)} terminal after {done_in:.1f}s"
    )
    assert all(r.state.value == "delivered" for r in records.values())
    assert stop_took < 15
    assert done_in < 40, "nothing waited for the hour-long visibility timeout"
