"""F7-F10: the provider throttles, fails, loses answers and expires the token."""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

import pytest

from tests.fault.harness import (
    MESSAGES_PATH,
    assert_invariants,
    new_id,
    submit_texts,
    text_message,
)

pytestmark = pytest.mark.fault

REACH_LIMIT = {"error": "reach_limit", "error_description": "This request has reached api limit"}
DOWN = {"error": "service_unavailable", "error_description": "try later"}
DELAY = re.compile(r"next attempt in ([0-9.]+)s")


def max_calls_in_any_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_429_waits_for_retry_after_and_headerless_429_backs_off_for_the_whole_pool(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    start_worker()
    told, untold = new_id("told"), new_id("untold")
    easemob.fault(
        path=MESSAGES_PATH, body_contains=told, status=429, body=REACH_LIMIT, retry_after=2, times=1
    )
    easemob.fault(path=MESSAGES_PATH, body_contains=untold, status=429, body=REACH_LIMIT, times=2)
    dispatcher.submit(text_message(told))
    dispatcher.submit(text_message(untold))
    load = submit_texts(dispatcher, 300, prefix="load")

    records = assert_invariants(dispatcher, easemob, [told, untold, *load], timeout=60)
    assert all(r.state.value == "delivered" for r in records.values())

    first, second = easemob.receipts(told)
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.answered_at >= 2.0, "waited at least Retry-After"

    sends = easemob.receipts(untold)
    statuses = [r.status for r in sends]
    assert statuses[:2] == [429, 429] and statuses[-1] == 200, statuses
    delays = [float(d) for h in records[untold].history for d in DELAY.findall(h.detail or "")]
    assert len(delays) == len(sends) - 1
    assert all(0 <= d <= 0.5 for d in delays), f"full jitter under the cap: {delays}"
    for earlier, later in itertools.pairwise(sends):
        # A 429 without Retry-After pushes the shared limiter back 1 s for every worker.
        assert later.received_at - earlier.answered_at >= 0.9

    accepted = [r.received_at for r in easemob.receipts() if r.status == 200]
    stats = easemob.stats()
    print(
        f"\nF7: peak {max_calls_in_any_second(accepted)} accepted calls in any second; "
        f"simulator's own 429s: {stats['rate_limited_429']} of {len(easemob.receipts())} calls"
    )
    assert stats["rate_limited_429"] <= 3, "the shared limiter keeps the pool under the limit"


def test_503_forever_follows_the_backoff_then_dead_then_replay_delivers_once(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    base, cap, attempts = 0.2, 0.8, 4
    start_worker(max_attempts=attempts, backoff_base=base, backoff_cap=cap)
    broken = [new_id("down"), new_id("down")]
    for message_id in broken:
        easemob.fault(path=MESSAGES_PATH, body_contains=message_id, status=503, body=DOWN)
    fine = submit_texts(dispatcher, 5, prefix="fine")
    for message_id in broken:
        dispatcher.submit(text_message(message_id))

    records = assert_invariants(dispatcher, easemob, broken + fine, timeout=30)
    dead_letters = [r.id for r, _ in dispatcher.store.read.dead_letters(limit=1000)]
    for message_id in broken:
        record = records[message_id]
        assert record.state.value == "dead"
        assert record.attempts == attempts
        assert record.lastError is not None and record.lastError.code == "service_unavailable"
        assert record.lastError.retryable
        assert message_id in dead_letters
        sends = easemob.receipts(message_id)
        assert [r.status for r in sends] == [503] * attempts
        for n, (earlier, later) in enumerate(itertools.pairwise(sends), start=1):
            ceiling = min(cap, base * 2 ** (n - 1))
            gap = later.received_at - earlier.answered_at
            assert gap <= ceiling + 0.75, f"retry {n} came {gap:.2f}s later (ceiling {ceiling}s)"
    assert all(records[m].state.value == "delivered" for m in fine)

    easemob.clear_faults()
    for message_id in broken:
        assert dispatcher.replay(message_id) == "ok"
    replayed = assert_invariants(dispatcher, easemob, broken, timeout=30)
    for message_id in broken:
        assert replayed[message_id].state.value == "delivered"
        assert [r.status for r in easemob.receipts(message_id)] == [503] * attempts + [200]
        assert message_id not in [r.id for r, _ in dispatcher.store.read.dead_letters(limit=1000)]


@pytest.mark.parametrize("loss", ["hang", "reset"])
def test_lost_response_is_retried_as_ambiguous_with_at_most_two_receipts(
    loss: str, dispatcher: Any, easemob: Any, start_worker: Any, fault_env: dict[str, str]
) -> None:
    start_worker()
    message_id = new_id(loss)
    timeout = float(fault_env["DISPATCHER_EASEMOB_TIMEOUT"])
    rule: dict[str, Any] = {"hang": timeout + 1} if loss == "hang" else {"reset": True}
    easemob.fault(
        path=MESSAGES_PATH, body_contains=message_id, after_handling=True, times=1, **rule
    )
    others = submit_texts(dispatcher, 5, prefix="calm")
    dispatcher.submit(text_message(message_id))

    records = assert_invariants(dispatcher, easemob, [message_id, *others], timeout=30)
    record = records[message_id]
    assert record.state.value == "delivered"
    retry = next(h for h in record.history if h.state.value == "retrying")
    assert (retry.detail or "").startswith("ambiguous:")
    deadline = time.monotonic() + 5  # a hung exchange is booked when its hang ends
    while easemob.reached()[message_id] < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert easemob.reached()[message_id] == 2, "the provider got it twice, and the history says so"
    assert all(easemob.reached()[m] == 1 for m in others)


def test_expired_token_is_refreshed_once_for_all_workers(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    workers = [start_worker() for _ in range(3)]
    before = submit_texts(dispatcher, 150, prefix="tok")
    deadline = time.monotonic() + 30
    while len([r for r in easemob.receipts() if r.status == 200]) < 40:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert easemob.token_calls() == 1, "one token fetched for every worker"
    expired = easemob.expire_tokens()
    after = submit_texts(dispatcher, 50, prefix="tok")

    records = assert_invariants(dispatcher, easemob, before + after, timeout=60)
    assert all(r.state.value == "delivered" for r in records.values())
    refused = [r for r in easemob.receipts() if r.status == 401]
    token_calls = easemob.token_calls()
    refreshed = [
        m for m, r in records.items() if "token refreshed after 401" in (r.history[-1].detail or "")
    ]
    print(
        f"\nF10: {expired} token expired mid-run; {len(refused)} sends refused with 401 across "
        f"{len(workers)} workers; {token_calls - 1} refresh(es); {len(refreshed)} sends retried"
    )
    assert refused, "the expiry was seen mid-run"
    assert token_calls == 2, f"one shared refresh, not a storm ({token_calls - 1} refreshes)"
    assert {r.message_id for r in refused} <= set(refreshed)
