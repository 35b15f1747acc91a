"""The status state machine under random interleavings (docs/reliability.md, "The state machine").

A hypothesis state machine drives one message's scripts on fakeredis in any order:
tasks arriving (leases), copies of any task published before (a broker's redelivery),
attempts finishing with any outcome (late ones too), leases extended, the reaper, an
operator's replay, a script re-run after a lost reply, and Redis's clock moving ahead.
After every step it checks the invariants.
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
from dispatcher.models import parse_message
from dispatcher.store import Lease, StandDown, StandDownReason, StatusStore, StorePolicy
from dispatcher.store import lease as lease_module
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
        elif got.reason is StandDownReason.EARLY:
            self.tasks.append(task)  # it waits again, as the same task
        else:
            assert isinstance(got, StandDown)

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
            self.publish(next_task)  # the countdown task

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
        dead = self.store.redis.zscore(keys.DEAD_LETTERS, MESSAGE.member) is not None
        assert dead == (self.state == "dead")

    def every_open_message_has_a_deadline(self) -> None:
        deadline = self.store.redis.zscore(keys.IN_FLIGHT, MESSAGE.member)
        assert (deadline is not None) == (self.state not in TERMINAL)

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
