"""The reaper's rules, driven in the racy order on fakeredis and on a Redis Cluster
(docs/reliability.md, "Recovery")."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest
import redis

from dispatcher import keys
from dispatcher.errors import DeliveryError
from dispatcher.ids import MessageRef
from dispatcher.models import parse_message
from dispatcher.store import Lease, Reaper, StatusStore, StorePolicy
from tests.conftest import ref, rejected_entries

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}
QUEUE = "work-queue"
REFUSED = DeliveryError("bad_request", "400", retryable=False, status=400)


StoreFactory = Callable[..., StatusStore]


@pytest.fixture()
def new_store(store_redis: redis.Redis) -> StoreFactory:
    """Stores on one Redis, then on a 3-primary Redis Cluster (the ``store_redis`` fixture)."""

    def make(**policy: float) -> StatusStore:
        options = {"ttl": 10**6, "queued_grace": 0, **policy}
        return StatusStore(store_redis, StorePolicy(**options))  # type: ignore[arg-type]

    return make


def create(store: StatusStore, message_id: str) -> None:
    store.submit.create(store.submit.prepare(ref(message_id), parse_message(TEXT), channel="e"))


def task_entry(message_id: str) -> str:
    """A queue list entry delivering ``message_id``, as far as the reaper reads it."""
    body = json.dumps([[ref(message_id).member], {}, {}])
    return json.dumps({"body": base64.b64encode(body.encode()).decode()})


def queued_at(store: StatusStore, message_id: str, at_ms: int) -> None:
    store.redis.hset(keys.message(ref(message_id)), "updatedAt", at_ms)


def field(store: StatusStore, message_id: str, name: str) -> str | None:
    value = store.redis.hget(keys.message(ref(message_id)), name)
    return None if value is None else value.decode()


class Publisher:
    def __init__(self, refuse: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse = refuse
        self.published: list[str] = []

    def __call__(self, message_ref: MessageRef, task_id: str) -> None:
        if message_ref.id in self.refuse:
            raise ConnectionError("broker refused")
        self.published.append(message_ref.id)


def test_a_failed_publish_is_unclaimed_and_the_rest_of_the_batch_still_goes_out(
    new_store: StoreFactory,
) -> None:
    store = new_store(max_requeues=1)
    for name in ("a", "b", "c"):
        create(store, name)
        assert isinstance(store.lease.begin(ref(name), f"w-{name}", 0), Lease)
    publish = Publisher(refuse={"b"})
    reaper = Reaper(store.recovery, publish, interval=1, requeue_delay=60)
    for _ in range(5):  # the broker keeps refusing b
        reaper.run_once()
    assert sorted(publish.published) == ["a", "c"]
    record = store.read.get(ref("b"))
    assert record is not None and record.state == "processing", "never poison: no attempt ran"
    due = store.redis.zscore(keys.shard_of(ref("b").member).inflight, ref("b").member)
    assert due is not None and due <= store.redis.time()[0] * 1000 + 1000, "due again now"
    assert field(store, "b", "requeues") == "1", "one lost lease, counted once"


def test_the_recovery_backoff_starts_over_after_an_attempt(new_store: StoreFactory) -> None:
    store = new_store()
    create(store, "m")
    for _ in range(4):
        store.recovery.claim_overdue(requeue_delay=0)
    assert field(store, "m", "waits") == "4"
    assert isinstance(store.lease.begin(ref("m"), "w1", 60), Lease)
    assert field(store, "m", "waits") == "0"


def test_expired_leases_are_claimed_in_one_pass_behind_a_backlog_of_queued_ids(
    new_store: StoreFactory,
) -> None:
    store = new_store()
    store.redis.lpush(QUEUE, "some other task")  # the broker queue never empties
    for n in range(1000):
        create(store, f"q{n}")
    create(store, "leased")
    assert isinstance(store.lease.begin(ref("leased"), "w1", 0), Lease)
    publish = Publisher()
    reaper = Reaper(store.recovery, publish, interval=1, requeue_delay=60, batch=100)
    reaper.queue_key = QUEUE
    assert reaper.run_once() == [ref("leased")]
    assert publish.published == ["leased"]


def test_a_queued_message_whose_task_was_lost_is_recovered_despite_a_steady_backlog(
    new_store: StoreFactory,
) -> None:
    store = new_store()
    create(store, "lost")  # its task vanished
    create(store, "later")
    queued_at(store, "lost", 1_000)
    queued_at(store, "later", 2_000)
    store.redis.lpush(QUEUE, task_entry("later"))  # the head of the queue is younger
    create(store, "behind")
    queued_at(store, "behind", 3_000)
    overdue = store.recovery.claim_overdue(requeue_delay=60, queue_key=QUEUE)
    assert [r.id for r in overdue.refs] == ["lost"], "only the one the head has passed"
    assert overdue.scanned == 3


def test_a_waiting_record_never_expires_and_an_expired_one_is_counted_and_traced(
    new_store: StoreFactory,
) -> None:
    store = new_store(ttl=1000)
    store.redis.lpush(QUEUE, "some other task")
    create(store, "waiting")
    store.redis.expire(keys.message(ref("waiting")), 5)
    store.recovery.claim_overdue(requeue_delay=0, queue_key=QUEUE)
    assert store.redis.ttl(keys.message(ref("waiting"))) > 900
    assert store.redis.ttl(keys.history(ref("waiting"))) > 900
    due = store.redis.zscore(keys.shard_of(ref("waiting").member).inflight, ref("waiting").member)
    assert due is not None and due <= store.redis.time()[0] * 1000 + 500_000, "within ttl/2"

    create(store, "gone")
    store.redis.delete(keys.message(ref("gone")))  # expired while queued
    store.recovery.claim_overdue(requeue_delay=0, queue_key=QUEUE)
    assert (
        store.redis.zscore(keys.shard_of(ref("gone").member).inflight, ref("gone").member) is None
    )
    assert store.read.stats().get("rejected:expired") == 1
    trace = rejected_entries(store.redis)
    assert [(t["reason"], ref("gone").member in t["detail"]) for t in trace] == [("expired", True)]


@pytest.fixture()
def poisoned(new_store: StoreFactory) -> tuple[StatusStore, Lease]:
    """A worker's lease runs out and the poison rule dead-letters the message (it had lost
    its lease before); that worker is still sending."""
    store = new_store(max_requeues=0)
    create(store, "m")
    late = store.lease.begin(ref("m"), "w1", 0)
    assert isinstance(late, Lease)
    assert store.recovery.claim_overdue(requeue_delay=0).refs == []
    record = store.read.get(ref("m"))
    assert record is not None and record.state == "dead"
    return store, late


def test_a_replay_racing_a_late_worker_keeps_the_replays_outcome(
    poisoned: tuple[StatusStore, Lease],
) -> None:
    store, late = poisoned
    assert store.recovery.replay(ref("m")) == "ok"
    fresh = store.lease.begin(ref("m"), "w2", 60)
    assert isinstance(fresh, Lease)
    assert store.lease.mark_failed(late, REFUSED, "400") == "stale"
    assert store.lease.mark_delivered(fresh, "p-2", "delivered") == "ok"
    record = store.read.get(ref("m"))
    assert record is not None and record.state == "delivered"


def test_a_poisoned_message_the_late_worker_delivered_leaves_the_dead_letters(
    poisoned: tuple[StatusStore, Lease],
) -> None:
    store, late = poisoned
    assert store.lease.mark_delivered(late, "p-1", "delivered") == "ok"
    record = store.read.get(ref("m"))
    assert record is not None and record.state == "delivered"
    assert store.read.dead_letters() == []
