"""F11, F12: four workers against the provider's limits; one id submitted 50 times at once."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from dispatcher import keys
from tests.conftest import ref
from tests.fault.harness import assert_invariants, new_id, text_message

pytestmark = pytest.mark.fault

F11_N = int(os.environ.get("DISPATCHER_F11_N", "1500"))


def test_four_workers_stay_under_the_provider_limits_at_close_to_the_limit(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    # Everything is queued first and the test process then stays quiet: the simulator
    # shares its interpreter, and a busy test would make it count in bursts.
    ids = [new_id("rate") for _ in range(F11_N)]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: dispatcher.submit(text_message(m, to=f"user{m[-3:]}")), ids))
    workers = [start_worker(wait_ready=False, worker_concurrency=16) for _ in range(4)]
    for worker in workers:
        worker.wait_ready()
    deadline = time.monotonic() + F11_N / 60 + 30
    while dispatcher.store.read.in_flight() and time.monotonic() < deadline:
        time.sleep(1)

    records = assert_invariants(dispatcher, easemob, ids, timeout=10)
    assert all(r.state.value == "delivered" for r in records.values())
    calls = sorted(r.received_at for r in easemob.receipts())
    achieved = (len(calls) - 1) / (calls[-1] - calls[0])
    stats = easemob.stats()
    refused = stats["rate_limited_429"] + stats["quota_exceeded_403"]
    print(
        f"\nF11: {len(workers)} workers, {len(calls)} sends in {calls[-1] - calls[0]:.1f}s: "
        f"{achieved:.1f} calls/s against a limit of 100 calls/s and 6000 msgs/min "
        f"({achieved / 100:.0%}); provider refusals: {stats['rate_limited_429']} x 429, "
        f"{stats['quota_exceeded_403']} x 403"
    )
    assert refused <= max(3, F11_N // 100), "near-zero (under 1 %) 429/403 from the provider"
    # The limiter aims at 97 %; a send delayed ~30 ms after its slot (CPU contention on a
    # busy 2-core runner) can still meet a 429, which pauses the pool for 1 s: the floor
    # leaves room for a few.
    assert achieved >= 75, f"achieved rate {achieved:.1f}/s is not close to the 100/s limit"
    assert achieved <= 100


def test_one_id_submitted_fifty_times_at_once_is_one_message_and_other_content_conflicts(
    dispatcher: Any, easemob: Any, start_worker: Any, api: Any
) -> None:
    start_worker()
    message_id = new_id("same")
    payload = text_message(message_id, text="exactly once")
    with ThreadPoolExecutor(50) as pool:
        replies = list(pool.map(lambda _: api.submit(payload), range(50)))
    assert [r.status_code for r in replies] == [200] * 50
    assert {r.json()["data"]["getMessageId"] for r in replies} == {message_id}

    different = api.submit(text_message(message_id, text="something else"))
    assert different.status_code == 409

    records = assert_invariants(dispatcher, easemob, [message_id], timeout=20)
    record = records[message_id]
    assert record.state.value == "delivered"
    assert record.attempts == 1
    assert [h.state.value for h in record.history] == ["queued", "processing", "delivered"]
    assert easemob.reached()[message_id] == 1
    assert len(easemob.receipts(message_id)) == 1
    stored = json.loads(dispatcher.store.read.stored_message(ref(message_id)) or "{}")
    assert stored["messageInfo"]["textMessage"] == "exactly once"
    assert dispatcher.redis.exists(keys.message(ref(message_id))) == 1
