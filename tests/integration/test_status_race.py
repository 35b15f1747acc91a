"""Forward-only transitions under real concurrency on a real Redis."""

from __future__ import annotations

import threading
import uuid

import pytest
import redis

from dispatcher.errors import DeliveryError
from dispatcher.models import parse_message
from dispatcher.store import Lease, StatusStore, StorePolicy
from tests.conftest import ref

pytestmark = pytest.mark.integration

TERMINAL = {"delivered", "failed", "dead"}


def test_racing_writers_never_move_a_terminal_state_back(redis_url: str) -> None:
    store = StatusStore(redis.Redis.from_url(redis_url), StorePolicy(ttl=600))
    message = parse_message(
        {"messageType": 1, "from": "a", "to": "b", "messageInfo": {"textMessage": "race"}}
    )
    ids = [ref(f"race{uuid.uuid4().hex}") for _ in range(200)]
    for message_ref in ids:
        store.submit.create(store.submit.prepare(message_ref, message, channel="easemob"))
    error = DeliveryError("boom", "provider error", retryable=True)
    start = threading.Barrier(2)

    def deliverer() -> None:
        start.wait()
        for message_ref in ids:
            attempt = store.lease.begin(message_ref, "deliverer", 30)
            if isinstance(attempt, Lease):
                store.lease.mark_delivered(attempt, "1", "ok")

    def saboteur() -> None:
        start.wait()
        for message_ref in ids:
            # a duplicate, late worker: takes any free lease, then tries to undo the outcome
            attempt = store.lease.begin(message_ref, "saboteur", 0)
            if isinstance(attempt, Lease):
                store.lease.mark_retrying(attempt, error, 0.0, "late retry")
            late = Lease(message_ref, "saboteur", 1, "")
            store.lease.mark_failed(late, error, "late failure")

    threads = [threading.Thread(target=deliverer), threading.Thread(target=saboteur)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for message_ref in ids:  # the retries the saboteur scheduled run once more
        retry = store.lease.begin(message_ref, "deliverer-again", 30)
        if isinstance(retry, Lease):
            store.lease.mark_delivered(retry, "1", "ok")

    for record in store.read.get_many(ids):
        assert record is not None
        assert record.state in TERMINAL
        states = [h.state.value for h in record.history]
        first_terminal = next(i for i, s in enumerate(states) if s in TERMINAL)
        # After the first terminal state only late answers follow, noted under that state.
        assert set(states[first_terminal:]) == {record.state}, states
    outcomes = {r.state for r in store.read.get_many(ids) if r}
    assert outcomes <= TERMINAL
