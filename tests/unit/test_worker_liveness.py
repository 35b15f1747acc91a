"""Leases of a dead worker process are broken within the worker timeout, and only then
(docs/reliability.md, "Recovery"; dispatcher/store/liveness.py), on fakeredis: beat ages
are written into the beats set, no test waits for the clock."""

from __future__ import annotations

import fakeredis

from dispatcher import keys
from dispatcher.delivery import attempt_owner
from dispatcher.models import parse_message
from dispatcher.store import Heartbeat, Lease, Reaper, StatusStore, StorePolicy
from dispatcher.store.liveness import process_identity
from tests.conftest import ref

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}
TIMEOUT_MS = 10_000
HOLDER = "host-a:101:aaaaaaaa"
WATCHER = "host-b:202:bbbbbbbb"


def new_store() -> StatusStore:
    policy = StorePolicy(ttl=10**6, worker_timeout=TIMEOUT_MS / 1000)
    return StatusStore(fakeredis.FakeRedis(), policy)  # type: ignore[arg-type]


def now_ms(store: StatusStore) -> int:
    seconds, micros = store.redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


def leased(store: StatusStore, message_id: str = "m") -> Lease:
    """A queued message leased by HOLDER for a minute, its next look made due now."""
    message = parse_message(TEXT)
    store.submit.create(store.submit.prepare(ref(message_id), message, channel="easemob"))
    lease = store.lease.begin(ref(message_id), f"{HOLDER}:1", 60)
    assert isinstance(lease, Lease)
    store.redis.zadd(
        keys.shard_of(ref(message_id).member).inflight, {ref(message_id).member: now_ms(store) - 1}
    )
    return lease


def beat_age(store: StatusStore, process: str, age_ms: int) -> None:
    for shard in keys.shards():
        store.redis.zadd(shard.beats, {process: now_ms(store) - age_ms})


def history(store: StatusStore, message_id: str = "m") -> str:
    record = store.read.get(ref(message_id))
    assert record is not None
    return "\n".join(h.detail or "" for h in record.history)


def test_a_lease_is_looked_at_one_worker_timeout_after_it_is_taken_not_at_its_end() -> None:
    store = new_store()
    message = parse_message(TEXT)
    store.submit.create(store.submit.prepare(ref("m"), message, channel="easemob"))
    before = now_ms(store)
    lease = store.lease.begin(ref("m"), f"{HOLDER}:1", 60)
    assert isinstance(lease, Lease)
    due = store.redis.zscore(keys.shard_of(ref("m").member).inflight, ref("m").member)
    assert due is not None and before + TIMEOUT_MS <= due < before + 60_000
    assert store.lease.extend(lease, 60) is not None
    due = store.redis.zscore(keys.shard_of(ref("m").member).inflight, ref("m").member)
    assert due is not None and due < now_ms(store) + 60_000, "an extension keeps the next look"


def test_a_lease_whose_holder_stopped_beating_is_broken_and_taken_over() -> None:
    store = new_store()
    leased(store)
    beat_age(store, HOLDER, TIMEOUT_MS + 500)
    watching = now_ms(store) - TIMEOUT_MS // 2 - 1

    overdue = store.recovery.claim_overdue(requeue_delay=30, watching_since=watching)

    assert [r.id for r in overdue.refs] == ["m"]
    assert f"its worker {HOLDER} stopped beating" in history(store)
    again = store.lease.begin(ref("m"), f"{WATCHER}:1", 60, task_id=overdue.task_ids[0])
    assert isinstance(again, Lease), f"the recovered task takes the lease over: {again}"
    assert "took over" in history(store)


def test_a_lease_whose_holder_beats_is_kept_and_looked_at_again() -> None:
    store = new_store()
    leased(store)
    beat_age(store, HOLDER, TIMEOUT_MS - 2000)
    watching = now_ms(store) - TIMEOUT_MS - 1

    overdue = store.recovery.claim_overdue(requeue_delay=30, watching_since=watching)

    assert overdue.refs == [] and overdue.scanned == 1
    due = store.redis.zscore(keys.shard_of(ref("m").member).inflight, ref("m").member)
    beat = store.redis.zscore(keys.shard_of(ref("m")).beats, HOLDER)
    assert beat is not None and due == beat + TIMEOUT_MS + 1, "looked at when it would be dead"
    busy = store.lease.begin(ref("m"), f"{WATCHER}:1", 60)
    assert not isinstance(busy, Lease), "the live holder keeps its lease"


def test_no_holder_is_judged_dead_without_half_a_timeout_of_watching() -> None:
    # After a Redis outage every beat is old: a reaper that has just started beating again
    # gives the others half a timeout (two of their beats) before it breaks their leases.
    store = new_store()
    leased(store)
    beat_age(store, HOLDER, TIMEOUT_MS * 3)
    for watching in (None, now_ms(store) - TIMEOUT_MS // 4):
        assert store.recovery.claim_overdue(requeue_delay=30, watching_since=watching).refs == []
    busy = store.lease.begin(ref("m"), f"{WATCHER}:1", 60)
    assert not isinstance(busy, Lease)


def test_a_holder_that_never_beat_keeps_its_lease_to_its_end() -> None:
    store = new_store()
    leased(store)
    watching = now_ms(store) - TIMEOUT_MS - 1
    assert store.recovery.claim_overdue(requeue_delay=30, watching_since=watching).refs == []
    assert not isinstance(store.lease.begin(ref("m"), f"{WATCHER}:1", 60), Lease)


def test_a_heartbeat_names_the_process_its_leases_name_and_a_reaper_passes_its_watch() -> None:
    store = new_store()
    heartbeat = Heartbeat(store.liveness)
    heartbeat.beat_once()
    assert attempt_owner().rsplit(":", 1)[0] == process_identity() == heartbeat.process
    assert all(store.redis.zscore(s.beats, process_identity()) is not None for s in keys.shards())
    since = heartbeat.watching_since()
    assert since is not None and abs(since - now_ms(store)) < 5000

    leased(store)
    beat_age(store, HOLDER, TIMEOUT_MS + 500)
    published: list[str] = []
    reaper = Reaper(
        store.recovery,
        lambda r, _task: published.append(r.id),
        interval=1,
        requeue_delay=30,
        heartbeat=heartbeat,
    )
    assert reaper.run_once() == [], "watching for less than half a timeout: nobody is dead"
    heartbeat._since_ms = now_ms(store) - TIMEOUT_MS // 2 - 1  # as if it had beaten a while
    store.redis.zadd(keys.shard_of(ref("m").member).inflight, {ref("m").member: now_ms(store) - 1})
    assert [r.id for r in reaper.run_once()] == ["m"] and published == ["m"]


def test_the_beats_set_stays_bounded() -> None:
    store = new_store()
    beats = keys.shards()[0].beats
    store.redis.zadd(beats, {"gone:1:x": now_ms(store) - 2 * 86_400_000})
    store.liveness.beat(WATCHER)
    assert store.redis.zrange(beats, 0, -1) == [WATCHER.encode()]
