"""F15: N messages end to end, then past the status TTL: every key expires, memory comes back (I4).

CI runs N=2000; ``DISPATCHER_F15_N=100000`` runs the full catalogue figure by
hand. The status TTL is short here (``DISPATCHER_F15_TTL``, default 20 s + N/100
s: a record's TTL restarts at each transition, so it must outlast the queue wait).
"""

from __future__ import annotations

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import redis

from dispatcher import keys
from dispatcher.store import StatusStore, lanes
from tests.fault.harness import (
    check_bounded_keys,
    check_forward_only,
    check_no_needless_duplicates,
    new_id,
    text_message,
    wait_all_terminal,
    wait_until,
)

pytestmark = pytest.mark.fault

N = int(os.environ.get("DISPATCHER_F15_N", "2000"))
TTL = int(os.environ.get("DISPATCHER_F15_TTL", str(20 + N // 100)))
UNLIMITED = 10**9


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def count_keys(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(pattern, count=5000))


@pytest.fixture()
def easemob(make_easemob: Any) -> Any:
    """F15 measures memory, not the provider's limits: a simulator that never throttles."""
    return make_easemob(calls_per_second=UNLIMITED, messages_per_minute=UNLIMITED)


@pytest.mark.timeout(max(300, N // 40 + 2 * TTL + 120))
def test_volume_run_leaves_only_expiring_keys_and_memory_returns_to_baseline(
    dispatcher: Any, easemob: Any, start_worker: Any, redis_server: Any
) -> None:
    settings = {
        "status_ttl": TTL,
        "easemob_calls_per_second": UNLIMITED,
        "easemob_messages_per_minute": UNLIMITED,
        "worker_concurrency": 16,
    }
    dispatcher.store = StatusStore(dispatcher.redis, replace(dispatcher.store.policy, ttl=TTL))
    workers = [start_worker(wait_ready=False, **settings) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    client = redis.Redis.from_url(redis_server.url)
    warm = new_id("warm")  # token cached, scripts loaded, queue bindings made
    dispatcher.submit(text_message(warm))
    wait_all_terminal(dispatcher, [warm], timeout=20)
    baseline = used_memory(client)

    started = time.monotonic()
    ids = [new_id("vol") for _ in range(N)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: dispatcher.submit(text_message(m, to=f"u{m[-4:]}")), ids))
    submitted_in = time.monotonic() - started
    peak = used_memory(client)
    deadline = time.monotonic() + N / 50 + 60
    while dispatcher.store.read.in_flight() and time.monotonic() < deadline:
        peak = max(peak, used_memory(client))
        time.sleep(0.5)
    done_in = time.monotonic() - started
    # I1 for all N from the transition counters (reading 100k records takes longer than
    # the first ones live); every record of the newest 5000 is read and checked too.
    assert dispatcher.store.read.stats()["state:delivered"] == N + 1  # and the warm-up
    records = wait_all_terminal(dispatcher, ids[-5000:], timeout=30)
    assert all(r.state.value == "delivered" for r in records.values())
    check_no_needless_duplicates(records, easemob)
    check_forward_only(records)
    kinds = check_bounded_keys(client, [dispatcher.settings.queue])
    assert dispatcher.store.read.in_flight() == 0
    fields = dispatcher.store.read.stats()
    # A fixed set of fields: the fleet's, plus one set per lane (app, client, priority).
    fleet = [f for f in fields if not f.startswith(lanes.LANE_PREFIX)]
    assert len(fleet) < 40, "the stats hash has a fixed set of fields"
    seen = {parsed[0] for f in fields if (parsed := lanes.parse_field(f)) is not None}
    assert len(seen) == 1, seen  # one client, one app, one priority in this run

    # Past the TTL every record and history is gone, and memory is back near its baseline.
    expires_by = time.monotonic() + TTL + 60
    while count_keys(client, keys.ALL_RECORDS) and time.monotonic() < expires_by:
        time.sleep(1)
    left = count_keys(client, keys.ALL_RECORDS) + count_keys(client, keys.ALL_HISTORIES)
    # Expired keys are freed by Redis's own cycles: wait for the figure, bounded.
    near_baseline = baseline + 1_000_000 + (peak - baseline) * 0.05
    with contextlib.suppress(AssertionError):
        wait_until(lambda: used_memory(client) < near_baseline, 30, "memory near baseline")
    after = used_memory(client)
    print(
        f"\nF15: N={N}: submitted in {submitted_in:.1f}s, all delivered after {done_in:.1f}s "
        f"({N / done_in:.0f} msg/s); keys at the end: {kinds}; memory baseline "
        f"{baseline / 1e6:.2f} MB, peak {peak / 1e6:.2f} MB, after TTL ({TTL}s) "
        f"{after / 1e6:.2f} MB; records left {left}"
    )
    assert left == 0, f"{left} records or histories outlived the status TTL"
    assert after < near_baseline, "memory back near baseline"
    client.close()
