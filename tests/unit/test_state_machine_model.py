"""The status state machine under random interleavings (docs/reliability.md, "The state machine").

A hypothesis state machine drives one message's scripts on fakeredis in any order:
tasks arriving (leases), copies of any task published before (a broker's redelivery),
attempts finishing with any outcome (late ones too), leases extended, the scheduler
promoting a due retry (also from a read taken steps earlier), the reaper, an operator's
replay, a script re-run after a lost reply, and Redis's clock moving ahead. After every
step it checks the invariants.
"""

from __future__ import annotations

import time

import fakeredis
from fakeredis.commands_mixins import server_mixin
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from dispatcher import keys
from dispatcher.errors import DeliveryError
from dispatcher.ids import MessageRef
from dispatcher.models import parse_message
from dispatcher.store import Lease, StandDown, StandDownReason, StatusStore, StorePolicy
from dispatcher.store import lease as lease_module
from dispatcher.store.schedule import DueBatch
from tests.conftest import ref

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}
MESSAGE = ref("model")
TERMINAL = {"delivered", "failed", "dead"}
ERROR = DeliveryError("unavailable", "503", retryable=True, status=503)


class Clock:
    """Redis's clock as fakeredis reads it, moved ahead by the test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset


class StatusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._real_time = server_mixin.time
        server_mixin.time = self.clock  # type: ignore[assignment]
        self.store = StatusStore(
            fakeredis.FakeRedis(), StorePolicy(ttl=10**6, queued_grace=5, retry_grace=5)
        )
        call = self.store.submit.prepare(MESSAGE, parse_message(TEXT), channel="easemob")
        assert self.store.submit.create(call).outcome == "created"
        self.tasks = ["create"]  # task ids in the broker, copies included
        self.published = ["create"]
        self.workers: list[Lease] = []
        self.owners = 0
        self.state = "queued"
        self.step = ""
        self.read: DueBatch | None = None  # a scheduler's read of the due entries

    def teardown(self) -> None:
        server_mixin.time = self._real_time

    # -- reading ---------------------------------------------------------------------

    def now_ms(self) -> int:
        seconds, micros = self.store.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def field(self, name: str) -> str | None:
        value = self.store.redis.hget(keys.message(MESSAGE), name)
        return None if value is None else value.decode()

    # -- rules -----------------------------------------------------------------------

    def publish(self, task_id: str) -> None:
        self.tasks.append(task_id)
        self.published.append(task_id)

    @precondition(lambda self: bool(self.tasks))
    @rule(which=st.integers(min_value=0), lease_seconds=st.sampled_from([0, 5, 30]))
    def a_task_arrives(self, which: int, lease_seconds: int) -> None:
        self.step = "lease"
        task = self.tasks.pop(which % len(self.tasks))
        before, due, live = self.field("state"), self.field("dueAt"), self.field("task")
        self.owners += 1
        got = self.store.lease.begin(MESSAGE, f"w{self.owners}", lease_seconds, task_id=task)
        if isinstance(got, Lease):
            assert live in (None, task), f"a copy ({task}) was served, not {live}"
            if before == "retrying":
                assert due is not None and self.now_ms() >= int(due), "a retry ran early"
            self.workers.append(got)
        else:  # early too: the schedule entry brings the retry at its time
            assert isinstance(got, StandDown)
            if got.reason is StandDownReason.EARLY:
                assert self.in_schedule() is not None, "an early retry without its entry"

    @rule(which=st.integers(min_value=0))
    def a_copy_of_an_earlier_task_appears(self, which: int) -> None:
        self.step = "copy"
        self.tasks.append(self.published[which % len(self.published)])

    @precondition(lambda self: bool(self.workers))
    @rule(
        which=st.integers(min_value=0),
        outcome=st.sampled_from(["delivered", "retrying", "deferred", "failed", "dead"]),
        delay=st.sampled_from([0.0, 2.0, 60.0]),
        lost_reply=st.booleans(),
    )
    def an_attempt_ends(self, which: int, outcome: str, delay: float, lost_reply: bool) -> None:
        self.step = f"finish:{outcome}"
        worker = self.workers.pop(which % len(self.workers))
        next_task = f"t{len(self.published)}"

        def finish() -> str:
            if outcome == "delivered":
                return self.store.lease.mark_delivered(worker, "p", "ok").value
            if outcome == "retrying":
                return self.store.lease.mark_retrying(
                    worker, ERROR, delay, "503", task_id=next_task
                ).value
            if outcome == "deferred":
                return self.store.lease.mark_deferred(
                    worker, ERROR, delay, "paused", task_id=next_task
                ).value
            if outcome == "failed":
                return self.store.lease.mark_failed(worker, ERROR, "400").value
            return self.store.lease.mark_dead(worker, ERROR, "used up").value

        if lost_reply:  # redis-py runs the same call again: the same answer
            original = lease_module.operation_id
            op = original()
            lease_module.operation_id = lambda: op  # type: ignore[assignment]
            try:
                first, again = finish(), finish()
            finally:
                lease_module.operation_id = original  # type: ignore[assignment]
            assert first == again, (first, again)
        else:
            first = finish()
        if first == "ok" and outcome in ("retrying", "deferred"):
            # Nothing is published: the retry waits in the schedule under next_task.
            assert self.in_schedule() == int(self.field("dueAt") or -1)
            assert self.field("task") == next_task

    @precondition(lambda self: bool(self.workers))
    @rule(which=st.integers(min_value=0))
    def an_attempt_keeps_its_lease(self, which: int) -> None:
        self.step = "extend"
        worker = self.workers[which % len(self.workers)]
        left = self.store.lease.extend(worker, 10)
        holder = (self.field("leaseOwner"), self.field("lease"))
        if left is not None:
            assert holder == (worker.owner, str(worker.lease_number))

    @rule(seconds=st.sampled_from([1, 6, 31, 120]))
    def time_passes(self, seconds: int) -> None:
        self.step = "time"
        self.clock.offset += seconds

    @rule()
    def a_scheduler_reads_the_schedule(self) -> None:
        self.step = "schedule-read"
        self.read = self.store.schedule.due(10)

    @precondition(lambda self: self.read is not None)
    @rule()
    def a_scheduler_promotes_what_it_read(self) -> None:
        self.step = "promote"
        assert self.read is not None
        recorded, due = self.field("task"), self.field("dueAt")
        promotion = self.store.schedule.promote(
            self.read.refs, self.no_direct_task, self.read.task_ids
        )
        self.read = None
        for task_id in promotion.task_ids:
            assert self.now_ms() >= int(due or 0), "a retry promoted before its due time"
            assert task_id == recorded, "a retry is published under the id it recorded"
            self.publish(task_id)

    @rule()
    def the_scheduler_runs(self) -> None:
        """A fresh read and its promotion: a due retry is queued, under its recorded id."""
        self.step = "schedule"
        waiting, recorded = self.in_schedule(), self.field("task")
        due = waiting is not None and waiting <= self.now_ms()
        read = self.store.schedule.due(10)
        promotion = self.store.schedule.promote(read.refs, self.no_direct_task, read.task_ids)
        assert promotion.task_ids == ([recorded] if due else []), (waiting, promotion)
        for task_id in promotion.task_ids:
            self.publish(task_id)

    @staticmethod
    def no_direct_task(ref: MessageRef, *, task_id: str) -> None:
        return None  # the caller publishes (a broker other than this Redis)

    @rule()
    def the_reaper_runs(self) -> None:
        self.step = "reaper"
        for task_id in self.store.recovery.claim_overdue(requeue_delay=5).task_ids:
            self.publish(task_id)

    @rule()
    def an_operator_replays(self) -> None:
        self.step = "replay"
        self.store.recovery.replay(MESSAGE, publish=lambda _, task_id: self.publish(task_id))

    # -- invariants ------------------------------------------------------------------

    @invariant()
    def holds(self) -> None:
        self.states_move_only_as_allowed()  # first: it reads the new state
        self.delivered_is_never_a_dead_letter()
        self.every_open_message_has_a_deadline()
        self.at_most_one_live_lease()
        self.at_most_one_live_task()

    def states_move_only_as_allowed(self) -> None:
        state = self.field("state")
        assert state is not None
        if self.state in TERMINAL and state != self.state:
            replayed = self.step == "replay" and self.state == "dead" and state == "queued"
            late_accept = state == "delivered"
            assert replayed or late_accept, f"{self.state} -> {state} by {self.step}"
        self.state = state

    def delivered_is_never_a_dead_letter(self) -> None:
        dead = (
            self.store.redis.zscore(keys.shard_of(MESSAGE.member).dead, MESSAGE.member) is not None
        )
        assert dead == (self.state == "dead")

    def in_schedule(self) -> int | None:
        score = self.store.redis.zscore(keys.shard_of(MESSAGE.member).schedule, MESSAGE.member)
        return None if score is None else int(score)

    def every_open_message_has_a_deadline(self) -> None:
        """An open message has a deadline in the in-flight index, or waits in the schedule
        (a retry, scored by its due time); never both, so the reaper never publishes a
        retry the schedule holds."""
        deadline = self.store.redis.zscore(keys.shard_of(MESSAGE.member).inflight, MESSAGE.member)
        waiting = self.in_schedule()
        assert (deadline is not None or waiting is not None) == (self.state not in TERMINAL)
        assert deadline is None or waiting is None, "in the in-flight index and the schedule"
        if waiting is not None:
            assert self.state == "retrying" and waiting == int(self.field("dueAt") or -1)

    def at_most_one_live_task(self) -> None:
        """Of the tasks in the broker, only copies of one would be served."""
        recorded = self.field("task")
        live = {t for t in self.tasks if recorded is None or t == recorded}
        assert len(live) <= 1, (live, recorded)

    def at_most_one_live_lease(self) -> None:
        until = self.field("leaseUntil")
        live = [
            w
            for w in self.workers
            if self.state == "processing"
            and until is not None
            and int(until) > self.now_ms()
            and (w.owner, str(w.lease_number)) == (self.field("leaseOwner"), self.field("lease"))
        ]
        assert len(live) <= 1
        if self.state != "processing":
            assert self.field("leaseOwner") is None


StatusModel.TestCase.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
test_status_state_machine = StatusModel.TestCase
