"""The doorbell's store side (docs/architecture.md, "The doorbell"): one ring while one is
outstanding, a drain that leases what it takes, rings again while entries are left and
clears the flag when none are, the reaper's ring of a stalled lane, promotions onto the
pending list."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from dispatcher import keys
from dispatcher.config import Settings
from dispatcher.enqueue import RING_TASK
from dispatcher.models import parse_message
from dispatcher.producer import Dispatcher
from dispatcher.store import Lease, PendingLane, Ring, StandDown, StandDownReason
from tests.conftest import ref

QUEUE = "doorbell-test"
LANE = PendingLane(QUEUE)


@pytest.fixture()
def dispatcher() -> Dispatcher:
    settings = Settings(queue=QUEUE, memory_refuse_ratio=0, delivery_batch=2)
    return Dispatcher(settings, client=fakeredis.FakeRedis())


def submit(d: Dispatcher, message_id: str, **extra: Any) -> None:
    body = {"messageType": 1, "from": "u1", "to": "u2", "getMessageId": message_id}
    body["messageInfo"] = {"textMessage": "hi"}
    assert d.submit_message(parse_message({**body, **extra})).created


def rings(d: Dispatcher) -> list[str]:
    return [json.loads(t)["headers"]["task"] for t in d.redis.lrange(QUEUE, 0, -1)]


def drain(d: Dispatcher, owners: list[str]) -> tuple[list[Lease | StandDown], Ring]:
    bell = d.doorbell
    assert bell is not None
    drained = d.store.pending.drain(LANE, owners, 30, ring_task=bell.ring_task())
    return drained.grants, drained.ring


def test_a_backlog_is_drained_in_batches_each_leased_and_the_last_drain_clears_the_flag(
    dispatcher: Dispatcher,
) -> None:
    for message_id in ("m0a", "m0b", "m0c"):
        submit(dispatcher, message_id)
    assert rings(dispatcher) == [RING_TASK]

    grants, ring = drain(dispatcher, ["w:1", "w:2"])
    assert [g.ref for g in grants] == [ref("m0a"), ref("m0b")], "oldest first"
    assert all(isinstance(g, Lease) and g.number == 1 for g in grants)
    assert [dispatcher.status(m).state for m in ("m0a", "m0b", "m0c")] == [
        "processing",
        "processing",
        "queued",
    ]
    assert ring is Ring.PUSHED and rings(dispatcher) == [RING_TASK] * 2, "rings for the rest"
    assert dispatcher.redis.exists(LANE.flag)

    grants, ring = drain(dispatcher, ["w:3", "w:4"])
    assert [g.ref for g in grants] == [ref("m0c")]
    assert ring is Ring.NONE and not dispatcher.redis.exists(LANE.flag)

    submit(dispatcher, "m0d")  # right after the flag went: rings anew
    assert rings(dispatcher) == [RING_TASK] * 3


def test_one_drain_leases_messages_of_several_shards_in_their_own_keys(
    dispatcher: Dispatcher,
) -> None:
    ids = [f"m0s{i}" for i in range(12)]
    for message_id in ids:
        submit(dispatcher, message_id)
    shards = {keys.shard_of(ref(m)) for m in ids}
    assert len(shards) > 2, "the lane's messages are in several shards"
    entries = dispatcher.redis.lrange(LANE.pending, 0, -1)
    assert entries[::-1] == [keys.pending_entry(ref(m)).encode() for m in ids]
    assert [keys.ref_of_entry(e.decode()) for e in entries[::-1]] == [ref(m) for m in ids]
    grants, _ = drain(dispatcher, [f"w:{i}" for i in range(12)])
    assert [g.ref for g in grants] == [ref(m) for m in ids], "plain members answered"
    for message_id in ids:
        shard, member = keys.shard_of(ref(message_id)), ref(message_id).member
        assert dispatcher.status(message_id).state == "processing"
        score = dispatcher.redis.zscore(shard.inflight, member)
        assert score is not None, "the deadline is in the message's own shard"
        others = [s for s in keys.shards() if s != shard]
        assert all(dispatcher.redis.zscore(s.inflight, member) is None for s in others)
        history = dispatcher.redis.lrange(shard.history(member), 0, -1)
        assert any(b"processing" in h for h in history)


def test_a_drained_entry_whose_message_is_held_or_ended_stands_down(
    dispatcher: Dispatcher,
) -> None:
    submit(dispatcher, "m0held")
    (first,), _ = drain(dispatcher, ["w:1", "w:2"])
    assert isinstance(first, Lease)
    dispatcher.redis.lpush(LANE.pending, keys.pending_entry(ref("m0held")))  # a copy
    (copy,), _ = drain(dispatcher, ["w:3", "w:4"])
    assert isinstance(copy, StandDown) and copy.reason is StandDownReason.BUSY
    dispatcher.redis.lpush(LANE.pending, keys.pending_entry(ref("m0gone")))
    (gone,), _ = drain(dispatcher, ["w:5", "w:6"])
    assert isinstance(gone, StandDown) and gone.reason is StandDownReason.MISSING


def test_an_entry_naming_a_superseded_task_stands_down(dispatcher: Dispatcher) -> None:
    submit(dispatcher, "m0task")
    dispatcher.redis.delete(LANE.pending)
    dispatcher.redis.hset(keys.message(ref("m0task")), "task", "t-live")
    dispatcher.redis.lpush(LANE.pending, keys.pending_entry(ref("m0task"), "t-old"))
    dispatcher.redis.lpush(LANE.pending, keys.pending_entry(ref("m0task"), "t-live"))
    old, live = drain(dispatcher, ["w:1", "w:2"])[0]
    assert isinstance(old, StandDown) and old.reason is StandDownReason.SUPERSEDED
    assert isinstance(live, Lease)


def test_the_reaper_rings_a_lane_whose_entries_wait_without_a_ring(
    dispatcher: Dispatcher,
) -> None:
    bell = dispatcher.doorbell
    assert bell is not None
    store = dispatcher.store.pending
    assert store.ring_if_stalled(LANE, bell.ring_task()) is Ring.NONE, "nothing waits"
    submit(dispatcher, "m0lost")
    assert store.ring_if_stalled(LANE, bell.ring_task()) is Ring.NONE, "a ring is outstanding"
    dispatcher.redis.delete(QUEUE, LANE.flag)  # the ring was lost, its flag expired
    assert store.ring_if_stalled(LANE, bell.ring_task()) is Ring.PUSHED
    assert rings(dispatcher) == [RING_TASK]
    assert store.ring_if_stalled(LANE, None) is Ring.NONE, "the flag is the claim"
    dispatcher.redis.delete(LANE.flag)
    assert store.ring_if_stalled(LANE, None) is Ring.PUBLISH, "another broker: ours to publish"


def test_a_due_message_is_promoted_onto_the_pending_list_under_its_task(
    dispatcher: Dispatcher,
) -> None:
    bell = dispatcher.doorbell
    assert bell is not None
    submit(dispatcher, "m0later", sendAt=4_102_444_800_000)
    assert dispatcher.redis.llen(LANE.pending) == 0 and rings(dispatcher) == []
    member = ref("m0later").member
    dispatcher.redis.zadd(keys.shard_of(member).schedule, {member: 1})
    due = dispatcher.store.schedule.due(10)
    promotion = dispatcher.store.schedule.promote(
        due.refs, dispatcher.direct_enqueue, due.task_ids, bell
    )
    assert promotion.refs == [ref("m0later")] and promotion.pushed and not promotion.ring
    (task_id,) = promotion.task_ids
    entry = keys.pending_entry(ref("m0later"), task_id)
    assert entry == f"{keys.shard_of(member).open}{member} {task_id}"
    assert dispatcher.redis.lrange(LANE.pending, 0, -1) == [entry.encode()]
    assert rings(dispatcher) == [RING_TASK]
    (grant,), _ = drain(dispatcher, ["w:1", "w:2"])
    assert isinstance(grant, Lease)


def test_a_drain_of_none_passes_the_ring_on_while_entries_wait(dispatcher: Dispatcher) -> None:
    submit(dispatcher, "m0wait")
    assert drain(dispatcher, []) == ([], Ring.PUSHED)
    assert rings(dispatcher) == [RING_TASK] * 2 and dispatcher.redis.llen(LANE.pending) == 1
    assert len(drain(dispatcher, ["w:1"])[0]) == 1
    assert drain(dispatcher, []) == ([], Ring.NONE) and not dispatcher.redis.exists(LANE.flag)
