"""Scheduled sends on fakeredis: ``sendAt`` parsing, the ``scheduled`` record, and the
promotion that queues each due message exactly once."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fakeredis
import pytest

from dispatcher import keys
from dispatcher.config import Settings
from dispatcher.enqueue import DirectEnqueue
from dispatcher.errors import DeliveryError, InvalidMessage
from dispatcher.ids import MessageRef
from dispatcher.producer import Dispatcher
from dispatcher.scheduling import parse_send_at
from dispatcher.store import CancelOutcome, Lease, Scheduler, StandDown, StandDownReason
from tests.conftest import ref

QUEUE = "schedule-test"


def body(message_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "a",
        "to": "b",
        "messageInfo": {"textMessage": "later"},
        "getMessageId": message_id,
        **extra,
    }


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture()
def dispatcher() -> Dispatcher:
    return Dispatcher(
        Settings(queue=QUEUE, memory_refuse_ratio=0, status_ttl=1000),
        client=fakeredis.FakeRedis(),
    )


def scheduler(d: Dispatcher, published: list[MessageRef] | None = None) -> Scheduler:
    sink = published if published is not None else []
    return Scheduler(
        d.store.schedule, d.direct_enqueue, lambda r, _task_id: sink.append(r), interval=0.05
    )


def make_due(d: Dispatcher, message_id: str) -> None:
    """Move a scheduled entry's time into the past (fakeredis has no clock to wait on)."""
    d.redis.zadd(
        keys.shard_of(ref(message_id).member).schedule, {ref(message_id).member: now_ms() - 5}
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-30T09:00:00+08:00", datetime(2026, 11, 30, 1, tzinfo=UTC)),
        ("2026-11-30t01:00:00.250z", datetime(2026, 11, 30, 1, 0, 0, 250000, tzinfo=UTC)),
        ("2026-11-30T01:00:00.123456789Z", datetime(2026, 11, 30, 1, 0, 0, 123456, tzinfo=UTC)),
        (1_796_000_000_000, datetime.fromtimestamp(1_796_000_000, tz=UTC)),
        (
            datetime(2026, 1, 1, 8, tzinfo=timezone(timedelta(hours=8))),
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_send_at_accepts_rfc3339_with_an_offset_and_epoch_ms(
    value: Any, expected: datetime
) -> None:
    assert parse_send_at(value) == int(expected.timestamp() * 1000)


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-30T09:00:00",
        "2026-11-30",
        "tomorrow",
        "2026-02-30T09:00:00Z",
        True,
        -1,
        1.5,
        datetime(2026, 1, 1),
    ],
)
def test_send_at_refuses_times_without_an_offset_and_other_shapes(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_send_at(value)


def test_a_send_at_too_far_ahead_or_malformed_is_refused_and_keeps_nothing(
    dispatcher: Dispatcher,
) -> None:
    far = now_ms() + 31 * 86_400_000
    for payload in (body("m0far", sendAt=far), body("m0bad", sendAt="09:00")):
        with pytest.raises(InvalidMessage) as caught:
            dispatcher.submit(payload)
        assert [e.field for e in caught.value.errors] == ["sendAt"]
    assert dispatcher.redis.dbsize() == 0
    with pytest.raises(InvalidMessage, match="at most 2 days"):
        Dispatcher(
            Settings(queue=QUEUE, memory_refuse_ratio=0, schedule_max_days=2),
            client=fakeredis.FakeRedis(),
        ).submit(body("m0two"), send_at=now_ms() + 3 * 86_400_000)


def test_a_later_send_at_is_recorded_scheduled_with_no_task_and_kept_from_its_time(
    dispatcher: Dispatcher,
) -> None:
    due = now_ms() + 600_000
    dispatcher.submit(body("m0later", sendAt=due))
    record = dispatcher.status("m0later")
    assert record is not None and record.state == "scheduled"
    assert record.scheduledFor == datetime.fromtimestamp(due / 1000, tz=UTC)
    assert [h.state for h in record.history] == ["scheduled"]
    r = dispatcher.redis
    assert r.llen(QUEUE) == 0
    assert r.zscore(keys.shard_of(ref("m0later").member).schedule, ref("m0later").member) == due
    assert r.zscore(keys.shard_of(ref("m0later").member).inflight, ref("m0later").member) is None
    # The record lives status_ttl (1000 s) from its scheduled time, not from the submit.
    assert 1590 <= r.ttl(keys.message(ref("m0later"))) <= 1600
    # One key while it waits: the history list starts when it leaves ``scheduled``.
    assert r.exists(keys.history(ref("m0later"))) == 0
    # The same id and content again is a duplicate, whatever sendAt says.
    assert dispatcher.submit_message(dispatcher.validate(body("m0later"))).created is False


@pytest.mark.parametrize("offset_ms", [-3_600_000, 0, 900])
def test_a_send_at_in_the_past_or_within_a_second_is_sent_now(
    dispatcher: Dispatcher, offset_ms: int
) -> None:
    dispatcher.submit(body("m0now"), send_at=now_ms() + offset_ms)
    record = dispatcher.status("m0now")
    assert record is not None and record.state == "queued" and record.scheduledFor is None
    assert dispatcher.redis.llen(QUEUE) == 1
    assert dispatcher.store.schedule.waiting() == 0


def test_a_due_message_is_queued_once_with_its_task_even_by_several_schedulers(
    dispatcher: Dispatcher,
) -> None:
    dispatcher.submit(body("m0due"), send_at=now_ms() + 60_000)
    dispatcher.submit(body("m0wait"), send_at=now_ms() + 60_000)
    first, second = scheduler(dispatcher), scheduler(dispatcher)
    assert first.run_once()[0] == []  # not due yet
    make_due(dispatcher, "m0due")
    due = dispatcher.store.schedule.due(10).refs
    # Both saw it due; only the first promotion takes it.
    assert dispatcher.store.schedule.promote(due, first.task_for).refs == [ref("m0due")]
    assert dispatcher.store.schedule.promote(due, second.task_for).refs == []
    assert second.run_once()[0] == []
    r = dispatcher.redis
    assert r.llen(QUEUE) == 1
    task = json.loads(r.lindex(QUEUE, 0))
    assert task["headers"]["task"] == "dispatcher.deliver"
    record = dispatcher.status("m0due")
    assert record is not None and record.state == "queued"
    assert [h.state for h in record.history] == ["scheduled", "queued"]
    assert record.history[0].at == record.createdAt
    assert r.zscore(keys.shard_of(ref("m0due").member).inflight, ref("m0due").member) is not None
    assert 990 <= r.ttl(keys.message(ref("m0due"))) <= 1000  # status_ttl from now on
    waiting = dispatcher.status("m0wait")
    assert waiting is not None and waiting.state == "scheduled"
    assert dispatcher.store.schedule.waiting() == 1


def test_a_due_entry_without_a_scheduled_record_only_leaves_the_schedule(
    dispatcher: Dispatcher,
) -> None:
    dispatcher.submit(body("m0gone"), send_at=now_ms() + 60_000)
    dispatcher.redis.delete(keys.message(ref("m0gone")))  # expired, say
    make_due(dispatcher, "m0gone")
    assert scheduler(dispatcher).run_once()[0] == []
    assert dispatcher.store.schedule.waiting() == 0
    assert dispatcher.redis.llen(QUEUE) == 0


def test_with_another_broker_the_promoted_message_is_published(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    d = Dispatcher(
        Settings(queue=QUEUE, broker_url="redis://127.0.0.1:1/3", memory_refuse_ratio=0),
        client=fakeredis.FakeRedis(),
    )
    monkeypatch.setattr(d.celery, "send_task", lambda *a, **k: pytest.fail("published at submit"))
    d.submit(body("m0other"), send_at=now_ms() + 60_000)
    make_due(d, "m0other")
    published: list[MessageRef] = []
    assert scheduler(d, published).run_once()[0] == [ref("m0other")]
    assert published == [ref("m0other")]
    assert d.redis.llen(QUEUE) == 0
    record = d.status("m0other")
    assert record is not None and record.state == "queued"


def test_the_scheduler_sleeps_only_until_the_next_entry(dispatcher: Dispatcher) -> None:
    dispatcher.submit(body("m0soon"), send_at=now_ms() + 30_000)
    promoted, next_in = scheduler(dispatcher).run_once()
    assert promoted == [] and next_in is not None and 29 < next_in <= 30
    assert isinstance(dispatcher.direct_enqueue, DirectEnqueue)


# -- retries on the same schedule ----------------------------------------------------

BUSY = DeliveryError("unavailable", "503", retryable=True, status=503)


def retrying(
    d: Dispatcher, message_id: str, task_id: str, delay: float = 30.0, by: str = "t-create"
) -> Lease:
    """``message_id`` submitted, leased by its task ``by`` and answered 503: a retry in
    ``delay`` s recorded under ``task_id``. The submit's task is taken off the queue."""
    if d.status(message_id) is None:
        d.submit(body(message_id))
        d.redis.delete(QUEUE)
    lease = d.store.lease.begin(ref(message_id), "w1", 60, task_id=by)
    assert isinstance(lease, Lease)
    assert d.store.lease.mark_retrying(lease, BUSY, delay, "503", task_id=task_id) == "ok"
    return lease


def make_retry_due(d: Dispatcher, message_id: str) -> None:
    make_due(d, message_id)
    d.redis.hset(keys.message(ref(message_id)), "dueAt", now_ms() - 5)


def queued_task_ids(d: Dispatcher) -> list[str]:
    return [json.loads(t)["headers"]["id"] for t in d.redis.lrange(QUEUE, 0, -1)]


def test_a_retry_waits_in_the_schedule_and_is_queued_once_under_its_recorded_task(
    dispatcher: Dispatcher,
) -> None:
    r, member = dispatcher.redis, ref("m0r").member
    retrying(dispatcher, "m0r", "t-retry")
    due_at = int(r.hget(keys.message(ref("m0r")), "dueAt") or 0)
    assert r.zscore(keys.shard_of(member).schedule, member) == due_at, (
        "the entry was added with the retry"
    )
    assert r.zscore(keys.shard_of(member).inflight, member) is None, (
        "the reaper has nothing to publish"
    )
    assert r.ttl(keys.message(ref("m0r"))) > 1000 + 28, "kept status_ttl from its due time"
    first, second = scheduler(dispatcher), scheduler(dispatcher)
    assert first.run_once()[0] == [] and r.llen(QUEUE) == 0, "not due yet"

    make_retry_due(dispatcher, "m0r")
    assert dispatcher.store.recovery.claim_overdue().refs == [], "the schedule's, not the reaper's"
    due = dispatcher.store.schedule.due(10)
    assert due.task_ids == ["t-retry"]
    assert first.run_once()[0] == [ref("m0r")]
    assert dispatcher.store.schedule.promote(due.refs, second.task_for, due.task_ids).refs == []
    assert queued_task_ids(dispatcher) == ["t-retry"], "one task, the id the retry recorded"
    record = dispatcher.status("m0r")
    assert record is not None and record.state == "retrying", "due: served at its lease"
    assert r.zscore(keys.shard_of(member).schedule, member) is None
    assert r.zscore(keys.shard_of(member).inflight, member) is not None, (
        "recovery covers a lost task"
    )

    copy = dispatcher.store.lease.begin(ref("m0r"), "w2", 60, task_id="t-create")
    assert isinstance(copy, StandDown) and copy.reason is StandDownReason.SUPERSEDED
    again = dispatcher.store.lease.begin(ref("m0r"), "w3", 60, task_id="t-retry")
    assert isinstance(again, Lease) and again.number == 2


def test_a_cancelled_retry_is_never_queued(dispatcher: Dispatcher) -> None:
    retrying(dispatcher, "m0rc", "t-retry")
    make_retry_due(dispatcher, "m0rc")
    due = dispatcher.store.schedule.due(10)  # read just before the cancel
    assert dispatcher.cancel("m0rc").outcome is CancelOutcome.CANCELLED
    assert dispatcher.store.schedule.waiting() == 0
    promoted = dispatcher.store.schedule.promote(due.refs, dispatcher.direct_enqueue, due.task_ids)
    assert promoted.refs == [] and dispatcher.redis.llen(QUEUE) == 0


def test_a_read_older_than_the_latest_retry_leaves_it_for_the_next_look(
    dispatcher: Dispatcher,
) -> None:
    retrying(dispatcher, "m0rr", "t-1", delay=0)
    stale = dispatcher.store.schedule.due(10)
    assert stale.task_ids == ["t-1"]
    assert scheduler(dispatcher).run_once()[0] == [ref("m0rr")]
    dispatcher.redis.delete(QUEUE)
    lease = dispatcher.store.lease.begin(ref("m0rr"), "w2", 60, task_id="t-1")
    assert isinstance(lease, Lease)
    assert dispatcher.store.lease.mark_retrying(lease, BUSY, 0, "503", task_id="t-2") == "ok"
    promote = dispatcher.store.schedule.promote
    assert promote(stale.refs, dispatcher.direct_enqueue, stale.task_ids).refs == []
    assert dispatcher.store.schedule.waiting() == 1, "the entry stays"
    assert scheduler(dispatcher).run_once()[0] == [ref("m0rr")]
    assert queued_task_ids(dispatcher) == ["t-2"]


def test_with_another_broker_a_due_retry_is_published_under_its_recorded_task() -> None:
    d = Dispatcher(
        Settings(queue=QUEUE, broker_url="redis://127.0.0.1:1/3", memory_refuse_ratio=0),
        client=fakeredis.FakeRedis(),
    )
    d.submit(body("m0ro"), send_at=now_ms() + 60_000)  # nothing published at submit
    make_due(d, "m0ro")
    published: list[tuple[MessageRef, str]] = []
    promote = Scheduler(
        d.store.schedule, d.direct_enqueue, lambda r, t: published.append((r, t)), interval=1
    )
    assert promote.run_once()[0] == [ref("m0ro")]
    (_, first_task), *_ = published
    assert d.redis.hget(keys.message(ref("m0ro")), "task") == first_task.encode()
    retrying(d, "m0ro", "t-retry", by=first_task)
    make_retry_due(d, "m0ro")
    assert promote.run_once()[0] == [ref("m0ro")]
    assert published[1:] == [(ref("m0ro"), "t-retry")]
    assert d.redis.llen(QUEUE) == 0
