"""Only the holder of a lease moves the state; a late attempt's answer goes to the history.

Each test drives the scripts in the racy order on fakeredis: an attempt whose lease ran out
(lease of 0 s) is taken over by a second one, then both report.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import fakeredis
import pytest

from dispatcher import delivery, keys
from dispatcher.channels import Origin, Receipt
from dispatcher.config import Settings
from dispatcher.errors import DeliveryError, ProviderError
from dispatcher.models import parse_message
from dispatcher.store import Lease, StandDown, StandDownReason, StatusStore, StorePolicy
from tests.conftest import ref

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}
REFUSED = DeliveryError("bad_request", "400 refused", retryable=False, status=400)
BUSY = DeliveryError("unavailable", "503", retryable=True, status=503)


@pytest.fixture()
def store() -> StatusStore:
    store = StatusStore(fakeredis.FakeRedis(), StorePolicy(ttl=100, history_limit=20))
    store.submit.create(store.submit.prepare(ref("m1"), parse_message(TEXT), channel="easemob"))
    return store


def taken_over(store: StatusStore) -> tuple[Lease, Lease]:
    """The first attempt's lease runs out and a second attempt takes the message over."""
    first = store.lease.begin(ref("m1"), "w1", 0)
    second = store.lease.begin(ref("m1"), "w2", 60)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert (first.lease_number, second.lease_number) == (1, 2)
    return first, second


def details(store: StatusStore) -> list[str]:
    record = store.read.get(ref("m1"))
    assert record is not None
    return [h.detail or "" for h in record.history]


@pytest.mark.parametrize(
    "late",
    [
        lambda s, lease: s.lease.mark_failed(lease, REFUSED, "400"),
        lambda s, lease: s.lease.mark_dead(lease, BUSY, "attempts used"),
        lambda s, lease: s.lease.mark_retrying(lease, BUSY, 1.0, "503"),
        lambda s, lease: s.lease.mark_deferred(lease, BUSY, 1.0, "paused"),
    ],
    ids=["failed", "dead", "retrying", "deferred"],
)
def test_an_attempt_that_lost_its_lease_only_adds_to_the_history(
    store: StatusStore, late: Any
) -> None:
    first, _ = taken_over(store)
    assert late(store, first) == "stale"
    record = store.read.get(ref("m1"))
    assert record is not None and record.state == "processing" and record.attempts == 2
    assert "late answer of an attempt that lost its lease (w1)" in details(store)[-1]
    assert store.read.dead_letters() == []


def test_the_lease_number_is_checked_not_only_the_owner(store: StatusStore) -> None:
    lease = store.lease.begin(ref("m1"), "w1", 60)
    assert isinstance(lease, Lease)
    earlier_grant = replace(lease, lease_number=lease.lease_number - 1)
    assert store.lease.mark_failed(earlier_grant, REFUSED, "400") == "stale"
    assert store.lease.mark_failed(lease, REFUSED, "400") == "ok"


def test_the_takers_accept_wins_over_the_late_attempts_refusal(store: StatusStore) -> None:
    """The order seen end to end: the second attempt is accepted, the first answers 400."""
    first, second = taken_over(store)
    assert store.lease.mark_delivered(second, "p-2", "delivered via easemob") == "ok"
    assert store.lease.mark_failed(first, REFUSED, "400") == "terminal:delivered"
    record = store.read.get(ref("m1"))
    assert record is not None and record.state == "delivered"
    assert record.providerMessageId == "p-2"
    assert "late answer of an attempt that lost its lease (w1): failed: 400" in details(store)[-1]


def test_a_late_accept_is_delivered_and_keeps_its_provider_id(store: StatusStore) -> None:
    first, second = taken_over(store)
    assert store.lease.mark_delivered(first, "p-1", "delivered via easemob") == "ok"
    record = store.read.get(ref("m1"))
    assert record is not None and record.state == "delivered"
    assert record.providerMessageId == "p-1"
    assert store.lease.mark_delivered(second, "p-2", "delivered via easemob") == (
        "terminal:delivered"
    )
    assert "(providerMessageId p-2)" in details(store)[-1], "the second accept is a fact too"


def test_a_late_accept_takes_a_message_off_the_dead_letters(store: StatusStore) -> None:
    first, second = taken_over(store)
    assert store.lease.mark_dead(second, BUSY, "attempts used") == "ok"
    assert [r.id for r, _ in store.read.dead_letters()] == ["m1"]
    assert store.lease.mark_delivered(first, "p-1", "delivered via easemob") == "ok"
    record = store.read.get(ref("m1"))
    assert record is not None and record.state == "delivered"
    assert store.read.dead_letters() == []
    assert store.recovery.replay(ref("m1")) == "state:delivered", "never sent again"


def test_a_lease_is_extended_only_by_its_holder(store: StatusStore) -> None:
    first, second = taken_over(store)
    assert store.lease.extend(first, 30) is None
    left = store.lease.extend(second, 120)
    assert left is not None and 119 < left <= 120
    assert store.lease.extend(second, 1) == pytest.approx(left, abs=0.5), "never shortened"


class TakenOverMidway:
    """A channel whose attempt loses its lease between two provider calls."""

    name = "easemob"

    def __init__(self, store: StatusStore) -> None:
        self.store = store
        self.calls = 0

    def send(self, message_id: str, message: Any, *, origin: Origin, **_: Any) -> Receipt:
        origin.before_call(5.0)
        self.calls += 1
        # A pause longer than the lease: another attempt takes the message over.
        self.store.redis.hset(keys.message(ref("m1")), "leaseUntil", 0)
        assert isinstance(self.store.lease.begin(ref("m1"), "w2", 60), Lease)
        origin.before_call(5.0)
        self.calls += 1
        return Receipt("never")

    def rate_prepay(self) -> None:
        return None

    def close(self) -> None:
        pass


def test_an_attempt_that_lost_its_lease_makes_no_further_provider_call(
    store: StatusStore,
) -> None:
    channel = TakenOverMidway(store)
    settings = Settings(lease_seconds=3)  # shorter than a call: the first call extends it
    outcome = delivery.attempt(
        ref("m1"), settings=settings, store=store, channels={"easemob": channel},
        resolve_media=None,
    )  # fmt: skip
    assert (outcome.state, outcome.reason) == ("stood-down", "lease_lost")
    assert channel.calls == 1
    record = store.read.get(ref("m1"))
    assert record is not None and record.state == "processing"
    assert "abandoned" in details(store)[-1]


def test_a_retry_is_not_leased_before_its_due_time(store: StatusStore) -> None:
    lease = store.lease.begin(ref("m1"), "w1", 60)
    assert isinstance(lease, Lease)
    assert store.lease.mark_retrying(lease, BUSY, 300, "503") == "ok"
    early = store.lease.begin(ref("m1"), "reaper-copy", 60)
    assert isinstance(early, StandDown) and early.reason is StandDownReason.EARLY
    assert 299 < early.wait <= 300
    record = store.read.get(ref("m1"))
    assert record is not None and record.state == "retrying" and record.attempts == 1
    store.redis.hset(keys.message(ref("m1")), "dueAt", 0)  # the due time passes
    on_time = store.lease.begin(ref("m1"), "w2", 60)
    assert isinstance(on_time, Lease) and on_time.number == 2


class Throttled:
    name = "easemob"

    def send(self, message_id: str, message: Any, **_: Any) -> Receipt:
        raise ProviderError("rate_limited", "429", retryable=True, retry_after=86400, status=429)

    def rate_prepay(self) -> None:
        return None

    def close(self) -> None:
        pass


def test_retry_after_is_capped_well_under_the_visibility_timeout(store: StatusStore) -> None:
    settings = Settings(retry_after_cap=120, visibility_timeout=3600)
    outcome = delivery.attempt(
        ref("m1"), settings=settings, store=store, channels={"easemob": Throttled()},
        resolve_media=None,
    )  # fmt: skip
    assert outcome.state == "retrying" and outcome.retry_in == 120
    due = int(store.redis.hget(keys.message(ref("m1")), "dueAt") or 0)
    now_ms = store.redis.time()[0] * 1000
    assert 110_000 < due - now_ms <= 121_000, "the due time on Redis's clock is capped too"


def test_a_message_has_one_live_task_and_copies_stand_down(store: StatusStore) -> None:
    lease = store.lease.begin(ref("m1"), "w1", 60, task_id="t-create")
    assert isinstance(lease, Lease)
    assert store.lease.mark_retrying(lease, BUSY, 300, "503", task_id="t-retry") == "ok"
    copy = store.lease.begin(ref("m1"), "w2", 60, task_id="t-create")  # redelivered
    assert isinstance(copy, StandDown) and copy.reason is StandDownReason.SUPERSEDED
    early = store.lease.begin(ref("m1"), "w3", 60, task_id="t-retry")
    assert isinstance(early, StandDown) and early.reason is StandDownReason.EARLY
    store.redis.hset(keys.message(ref("m1")), "dueAt", 0)
    assert isinstance(store.lease.begin(ref("m1"), "w4", 60, task_id="t-retry"), Lease)


def test_the_reapers_task_supersedes_the_one_whose_lease_ran_out(store: StatusStore) -> None:
    assert isinstance(store.lease.begin(ref("m1"), "w1", 0, task_id="t-create"), Lease)
    overdue = store.recovery.claim_overdue(requeue_delay=60)
    assert overdue.refs == [ref("m1")]
    late_copy = store.lease.begin(ref("m1"), "w2", 60, task_id="t-create")
    assert isinstance(late_copy, StandDown) and late_copy.reason is StandDownReason.SUPERSEDED
    assert isinstance(store.lease.begin(ref("m1"), "w3", 60, task_id=overdue.task_ids[0]), Lease)
