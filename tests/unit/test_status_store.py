"""The status store's scripts on fakeredis: forward-only transitions, leases, idempotency."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import redis

from dispatcher import keys
from dispatcher.cluster import is_cluster
from dispatcher.errors import DeliveryError
from dispatcher.gate import Gate
from dispatcher.ids import MessageRef
from dispatcher.models import Message, parse_message
from dispatcher.ratelimit import Dimension, Prepay, SharedRateLimiter
from dispatcher.store import CreateOutcome, Lease, StandDown, StatusStore, StorePolicy
from tests.conftest import ref


@pytest.fixture()
def store(store_redis: redis.Redis) -> StatusStore:
    return StatusStore(store_redis, StorePolicy(ttl=100, history_limit=5))


def create(store: StatusStore, message_id: str, message: Message, **options: Any) -> str:
    """Record ``message``; the store's outcome (``created``, ``duplicate``, ...)."""
    call = store.submit.prepare(ref(message_id), message, **options)
    return store.submit.create(call).outcome


def ids(refs: list[MessageRef]) -> list[str]:
    return [r.id for r in refs]


def text(body: str = "hi") -> Message:
    return parse_message(
        {"messageType": 1, "from": "a", "to": "b", "messageInfo": {"textMessage": body}}
    )


def test_create_behind_a_gate_keeps_nothing_when_the_gate_refuses(store: StatusStore) -> None:
    """The submit gate (replay guard + client rate) runs in the create script (on a cluster
    in its own script first): a refusal leaves no record, no guard and no used budget; a
    pass takes the guard and one unit."""
    gate = Gate.for_client(
        "c1", rate_per_second=1, burst=1, guard=keys.replay_guard("c1", "n1"), guard_ttl_ms=5000
    )
    assert create(store, "id1", text(), channel="easemob", gate=gate) == "created"
    assert store.redis.pttl(keys.replay_guard("c1", "n1")) > 4000
    rate_state = store.redis.get(keys.rate_limit("submit:c1"))
    assert rate_state is not None

    # The same sign again: refused before anything else, even for another id.
    assert create(store, "id2", text(), channel="easemob", gate=gate) == "replayed"
    assert store.read.get(ref("id2")) is None

    # A fresh sign, but the rate (1/s, burst 1) is used up: the wait, and the guard given back.
    fresh = Gate.for_client(
        "c1", rate_per_second=1, burst=1, guard=keys.replay_guard("c1", "n2"), guard_ttl_ms=5000
    )
    refused = store.submit.create(
        store.submit.prepare(ref("id2"), text(), channel="easemob", gate=fresh)
    )
    assert refused.outcome is CreateOutcome.RATE_LIMITED and 0.9 <= refused.retry_after <= 1.0
    assert store.read.get(ref("id2")) is None
    assert not store.redis.exists(keys.replay_guard("c1", "n2"))
    assert store.redis.get(keys.rate_limit("submit:c1")) == rate_state

    # Another client has its own budget; no rate limit at all means only the guard.
    other = Gate.for_client("c2", rate_per_second=1, burst=1)
    assert create(store, "id2", text(), channel="easemob", gate=other) == "created"
    unlimited = Gate.for_client(
        "c1", rate_per_second=0, burst=1, guard=keys.replay_guard("c1", "n3"), guard_ttl_ms=5000
    )
    assert create(store, "id3", text(), channel="easemob", gate=unlimited) == "created"
    assert create(store, "id4", text(), channel="easemob", gate=unlimited) == "replayed"


def test_create_is_idempotent_for_the_same_content_and_conflicts_otherwise(
    store: StatusStore,
) -> None:
    assert create(store, "id1", text(), channel="easemob") == "created"
    assert create(store, "id1", text(), channel="easemob") == "duplicate"
    assert create(store, "id1", text("other"), channel="easemob") == "conflict"
    record = store.read.get(ref("id1"))
    assert record is not None and record.state == "queued" and record.attempts == 0


def test_records_carry_a_ttl(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    assert 0 < store.redis.ttl(keys.message(ref("id1"))) <= 100
    assert 0 < store.redis.ttl(keys.history(ref("id1"))) <= 100


def test_discard_removes_only_an_untouched_record(store: StatusStore) -> None:
    message = text()
    create(store, "id1", message, channel="easemob")
    assert store.submit.discard(ref("id1"), message) is True
    assert store.read.get(ref("id1")) is None
    create(store, "id2", message, channel="easemob")
    store.lease.begin(ref("id2"), "w1", 10)
    assert store.submit.discard(ref("id2"), message) is False


def test_a_live_lease_makes_a_second_worker_stand_down(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    first = store.lease.begin(ref("id1"), "w1", 10)
    assert isinstance(first, Lease) and first.number == 1
    second = store.lease.begin(ref("id1"), "w2", 10)
    assert isinstance(second, StandDown) and second.reason == "busy"


def test_an_expired_lease_is_taken_over_and_the_history_says_so(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    store.lease.begin(ref("id1"), "w1", 0)
    second = store.lease.begin(ref("id1"), "w2", 10)
    assert isinstance(second, Lease) and second.number == 2
    record = store.read.get(ref("id1"))
    assert record is not None
    assert "took over from w1" in (record.history[-1].detail or "")


def test_delivered_never_moves_back(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    attempt = store.lease.begin(ref("id1"), "w1", 10)
    assert isinstance(attempt, Lease)
    assert store.lease.mark_delivered(attempt, "123", "ok") == "ok"
    error = DeliveryError("x", "late", retryable=True)
    assert store.lease.mark_retrying(attempt, error, 1.0, "late") == "terminal:delivered"
    assert (
        store.lease.mark_failed(replace(attempt, owner="w2"), error, "late") == "terminal:delivered"
    )
    assert isinstance(store.lease.begin(ref("id1"), "w3", 10), StandDown)
    record = store.read.get(ref("id1"))
    assert record is not None and record.state == "delivered" and record.providerMessageId == "123"


def test_a_worker_that_lost_its_lease_cannot_schedule_a_retry(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    old = store.lease.begin(ref("id1"), "w1", 0)
    store.lease.begin(ref("id1"), "w2", 10)
    assert isinstance(old, Lease)
    assert (
        store.lease.mark_retrying(old, DeliveryError("x", "y", retryable=True), 1, "d") == "stale"
    )


def test_dead_letters_are_indexed_and_replay_requeues_them(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    lease = store.lease.begin(ref("id1"), "w1", 10)
    assert isinstance(lease, Lease)
    store.lease.mark_dead(lease, DeliveryError("down", "503", retryable=True), "gave up")
    assert [r.id for r, _ in store.read.dead_letters()] == ["id1"]
    assert store.recovery.replay(ref("id1")) == "ok"
    record = store.read.get(ref("id1"))
    assert record is not None and record.state == "queued" and record.attempts == 0
    assert store.read.dead_letters() == []
    assert store.recovery.replay(ref("id1")) == "state:queued"


def test_history_is_bounded(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    for n in range(10):
        store.lease.begin(ref("id1"), f"w{n}", 0)
    record = store.read.get(ref("id1"))
    assert record is not None and len(record.history) == 5 and record.attempts == 10


def test_get_many_keeps_order_and_reports_unknown_ids(store: StatusStore) -> None:
    create(store, "a", text(), channel="easemob")
    create(store, "c", text(), channel="easemob")
    records = store.read.get_many([ref(m) for m in ("c", "b", "a")])
    assert [r.getMessageId if r else None for r in records] == ["c", None, "a"]


def test_overdue_messages_are_claimed_once_and_poison_is_dead_lettered(
    store_redis: redis.Redis,
) -> None:
    store = StatusStore(store_redis, StorePolicy(ttl=100, queued_grace=0, max_requeues=2))
    create(store, "lost", text(), channel="easemob")
    for n in range(2):  # each attempt's worker dies: its lease (0 s here) runs out
        store.lease.begin(ref("lost"), f"w{n}", lease_seconds=0)
        assert ids(store.recovery.claim_overdue(requeue_delay=0).refs) == ["lost"]
        # Claimed again before any attempt ran (a failed publish): not another lost lease.
        assert ids(store.recovery.claim_overdue(requeue_delay=0).refs) == ["lost"]
    store.lease.begin(ref("lost"), "w2", lease_seconds=0)
    assert ids(store.recovery.claim_overdue(requeue_delay=0).refs) == []  # third lost lease: poison
    record = store.read.get(ref("lost"))
    assert record is not None and record.state == "dead"
    assert record.lastError is not None and record.lastError.code == "worker_lost"
    assert [r.id for r, _ in store.read.dead_letters()] == ["lost"]
    assert store.read.in_flight() == 0


def test_a_message_waiting_in_a_backlog_is_republished_with_backoff_and_never_poison(
    store_redis: redis.Redis,
) -> None:
    store = StatusStore(store_redis, StorePolicy(ttl=10**6, queued_grace=0, max_requeues=1))
    create(store, "waiting", text(), channel="easemob")
    for _ in range(5):
        assert ids(store.recovery.claim_overdue(requeue_delay=0).refs) == ["waiting"]
    record = store.read.get(ref("waiting"))
    assert record is not None and record.state == "queued"
    assert store.read.dead_letters() == []
    store.redis.zadd(keys.shard_of(ref("waiting")).inflight, {ref("waiting").member: 0})
    store.recovery.claim_overdue(requeue_delay=10)
    due = store.redis.zscore(keys.shard_of(ref("waiting")).inflight, ref("waiting").member)
    now_ms = store.redis.time()[0] * 1000
    assert due is not None and due - now_ms > 10_000 * 2**4  # the sixth wait: 2**5 x 10 s


def test_claimed_ids_are_not_claimed_again_before_the_requeue_delay(
    store_redis: redis.Redis,
) -> None:
    store = StatusStore(store_redis, StorePolicy(ttl=100, queued_grace=0))
    create(store, "a", text(), channel="easemob")
    assert ids(store.recovery.claim_overdue(requeue_delay=60).refs) == ["a"]
    assert ids(store.recovery.claim_overdue(requeue_delay=60).refs) == []


def test_live_leases_and_fresh_queue_entries_are_not_overdue(store: StatusStore) -> None:
    create(store, "queued", text(), channel="easemob")  # default grace 300 s
    create(store, "busy", text(), channel="easemob")
    store.lease.begin(ref("busy"), "w1", 60)
    create(store, "expired", text(), channel="easemob")
    store.lease.begin(ref("expired"), "w1", 0)
    assert ids(store.recovery.claim_overdue().refs) == ["expired"]
    assert store.read.in_flight() == 3


def test_terminal_messages_leave_the_in_flight_index(store: StatusStore) -> None:
    create(store, "id1", text(), channel="easemob")
    attempt = store.lease.begin(ref("id1"), "w1", 10)
    assert isinstance(attempt, Lease)
    store.lease.mark_delivered(attempt, "1", "ok")
    assert store.read.in_flight() == 0


def test_queued_messages_behind_a_backlog_are_left_alone_until_the_queue_drains(
    store_redis: redis.Redis,
) -> None:
    store = StatusStore(store_redis, StorePolicy(ttl=100, queued_grace=0))
    create(store, "waiting", text(), channel="easemob")
    store.redis.lpush("work-queue", "some other task")
    assert ids(store.recovery.claim_overdue(requeue_delay=0, queue_key="work-queue").refs) == []
    store.redis.delete("work-queue")
    assert ids(store.recovery.claim_overdue(requeue_delay=0, queue_key="work-queue").refs) == [
        "waiting"
    ]


def _prepay(client: redis.Redis, calls_per_second: float = 1.0) -> Prepay:
    limiter = SharedRateLimiter(
        client,
        [Dimension("calls", calls_per_second, 1.0), Dimension("user-messages", 60, 60.0)],
    )
    return limiter.prepay(
        "easemob",
        user_costs={"calls": 1, "user-messages": 1},
        other_costs={"calls": 1},
        types=frozenset({1, 5}),
    )


def test_lease_takes_the_rate_slot_of_a_message_whose_costs_are_known(store: StatusStore) -> None:
    """One round trip for lease and slot: text to a user pays both dimensions, to a group
    only calls; media (costs known only after resolution) and other channels pay nothing;
    a slot not free now is not taken and the lease is still granted."""
    prepay = _prepay(store.redis)
    calls, users = (keys.rate_limit(n) for n in ("calls", "user-messages"))
    if is_cluster(store.redis):  # the rate keys are in another slot: the send pays itself
        create(store, "to-user", text(), channel="easemob")
        lease = store.lease.begin(ref("to-user"), "w1", 30, prepay=prepay)
        assert isinstance(lease, Lease) and not lease.prepaid
        assert not store.redis.exists(calls) and not store.redis.exists(users)
        return

    create(store, "to-user", text(), channel="easemob")
    lease = store.lease.begin(ref("to-user"), "w1", 30, prepay=prepay)
    assert isinstance(lease, Lease) and lease.prepaid
    assert store.redis.exists(calls) and store.redis.exists(users)

    # calls is 1/s with no burst: the next slot is a second away; nothing is taken.
    store.redis.delete(users)
    group = parse_message(
        {"messageType": 1, "from": "a", "to": "12345", "messageInfo": {"textMessage": "hi"}}
    )
    create(store, "to-group", group, channel="easemob")
    before = store.redis.get(calls)
    busy = store.lease.begin(ref("to-group"), "w2", 30, prepay=prepay)
    assert isinstance(busy, Lease) and not busy.prepaid
    assert store.redis.get(calls) == before and not store.redis.exists(users)

    store.redis.delete(calls)  # the slot frees up: a group message pays calls only
    create(store, "to-group-2", group, channel="easemob")
    paid = store.lease.begin(ref("to-group-2"), "w3", 30, prepay=prepay)
    assert isinstance(paid, Lease) and paid.prepaid
    assert store.redis.exists(calls) and not store.redis.exists(users)

    store.redis.delete(calls)
    image = parse_message(
        {"messageType": 2, "from": "a", "to": "b", "messageInfo": {"imageMessage": "p.jpg"}}
    )
    create(store, "media", image, channel="easemob")
    create(store, "elsewhere", text(), channel="wechat")
    for message_id in ("media", "elsewhere"):
        other = store.lease.begin(ref(message_id), "w4", 30, prepay=prepay)
        assert isinstance(other, Lease) and not other.prepaid
    assert not store.redis.exists(calls) and not store.redis.exists(users)
