"""What the console reads and does through the producer facade, on a real Redis:
dead letters filtered by client, error code and time, discarded for good, queue backlog
with the oldest entry's age, and the provider-status counter behind the 429 chart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dispatcher.console.actions import find_dead_letters
from dispatcher.errors import ProviderError
from dispatcher.ids import MessageRef
from dispatcher.record import DeadLetterFilter
from dispatcher.store import Lease, StatusStore
from tests.conftest import ref

pytestmark = pytest.mark.integration


def text(message_id: str) -> dict[str, Any]:
    return {
        "getMessageId": message_id,
        "messageType": 1,
        "from": "u1",
        "to": "u2",
        "messageInfo": {"textMessage": f"text of {message_id}"},
    }


def make_dead(dispatcher: Any, message_id: str, *, client: str, code: str) -> None:
    """Accept a message, then let one attempt kill it (no worker needed)."""
    message = dispatcher.validate(text(message_id))
    dispatcher.submit_message(message, client=client, namespace=client)
    store: StatusStore = dispatcher.store
    lease = store.lease.begin(MessageRef(client, message_id), "w", 10)
    assert isinstance(lease, Lease)
    error = ProviderError(code, f"{code} happened", retryable=True, status=503)
    assert store.lease.mark_dead(lease, error, "test") == "ok"


def test_dead_letters_are_found_by_client_code_and_time_newest_first(dispatcher: Any) -> None:
    tag = str(time.time_ns())
    make_dead(dispatcher, f"a1{tag}", client="alpha", code="service_unavailable")
    make_dead(dispatcher, f"b1{tag}", client="beta", code="service_unavailable")
    time.sleep(0.01)  # distinct death times (ms) for the time filter
    middle = time.time()
    time.sleep(0.01)
    make_dead(dispatcher, f"a2{tag}", client="alpha", code="http_502")
    make_dead(dispatcher, f"a3{tag}", client="alpha", code="service_unavailable")

    def ids(where: DeadLetterFilter, **kwargs: Any) -> list[str]:
        page = find_dead_letters(dispatcher, where, **kwargs)
        return [letter.getMessageId for letter in page.letters if letter.getMessageId.endswith(tag)]

    assert ids(DeadLetterFilter(client="alpha")) == [f"a3{tag}", f"a2{tag}", f"a1{tag}"]
    assert ids(DeadLetterFilter(code="service_unavailable")) == [f"a3{tag}", f"b1{tag}", f"a1{tag}"]
    assert ids(DeadLetterFilter(client="alpha", code="http_502")) == [f"a2{tag}"]
    assert ids(DeadLetterFilter(client="alpha", since=middle)) == [f"a3{tag}", f"a2{tag}"]
    assert ids(DeadLetterFilter(client="alpha", until=middle)) == [f"a1{tag}"]
    assert ids(DeadLetterFilter(client="nobody")) == []

    first = find_dead_letters(dispatcher, DeadLetterFilter(client="alpha", since=middle), limit=1)
    assert [letter.getMessageId for letter in first.letters] == [f"a3{tag}"]
    assert first.letters[0].client == "alpha"
    assert first.letters[0].lastError.code == "service_unavailable"
    assert not first.exhausted
    rest = find_dead_letters(
        dispatcher, DeadLetterFilter(client="alpha", since=middle), offset=first.scanned
    )
    assert [letter.getMessageId for letter in rest.letters] == [f"a2{tag}"] and rest.exhausted

    # The scan stops after scan_limit letters and says it did not see everything.
    partial = find_dead_letters(dispatcher, DeadLetterFilter(code="no-such-code"), scan_limit=2)
    assert partial.letters == [] and partial.scanned == 2 and not partial.exhausted


def test_a_discarded_dead_letter_leaves_the_list_and_keeps_its_record(dispatcher: Any) -> None:
    tag = str(time.time_ns())
    make_dead(dispatcher, f"d{tag}", client="alpha", code="boom")
    dead = MessageRef("alpha", f"d{tag}")
    assert dispatcher.discard_dead_letter(dead, by="alice") == "ok"

    listed = [r.id for r, _ in dispatcher.store.read.dead_letters(limit=100_000)]
    assert f"d{tag}" not in listed
    record = dispatcher.status(dead)
    assert record.state == "dead"
    assert record.history[-1].detail == "discarded by alice"
    # Twice is harmless and says so; a live message or an unknown id is left alone.
    assert dispatcher.discard_dead_letter(dead, by="alice") == "not_listed"
    live = dispatcher.submit(text(f"q{tag}"))
    assert dispatcher.discard_dead_letter(live, by="alice") == "state:queued"
    assert dispatcher.discard_dead_letter(f"none{tag}", by="alice") == "missing"


def test_replay_names_the_operator_in_the_history(dispatcher: Any) -> None:
    tag = str(time.time_ns())
    make_dead(dispatcher, f"r{tag}", client="alpha", code="boom")
    assert dispatcher.replay(MessageRef("alpha", f"r{tag}"), by="client ops (console)") == "ok"
    record = dispatcher.status(MessageRef("alpha", f"r{tag}"))
    assert record.state == "queued"
    assert record.history[-1].detail == "replayed from dead letters by client ops (console)"


def test_queue_backlog_counts_entries_and_ages_the_next_one(
    dispatcher: Any, redis_client: Any
) -> None:
    queue = dispatcher.settings.queue
    empty = dispatcher.queue_backlog()
    assert [(b.queue, b.depth, b.oldest_age) for b in empty] == [(queue, 0, None)]

    tag = str(time.time_ns())
    dispatcher.submit(text(f"o{tag}"))
    time.sleep(0.3)
    dispatcher.submit(text(f"n{tag}"))
    [backlog] = dispatcher.queue_backlog()
    assert backlog.depth == 2
    # The next entry in line is the older one: at least the 0.3 s it has waited.
    assert backlog.oldest_age is not None and 0.3 <= backlog.oldest_age < 30
    assert [b.depth for b in dispatcher.queue_backlog([queue, "no-such-queue"])] == [2, 0]
    redis_client.delete(queue)


def test_provider_statuses_of_failed_attempts_are_counted(dispatcher: Any) -> None:
    tag = str(time.time_ns())
    message_id = dispatcher.submit(text(f"t{tag}"))
    store: StatusStore = dispatcher.store
    before = store.read.stats().get("provider:429", 0)
    lease = store.lease.begin(ref(message_id), "w", 10)
    assert isinstance(lease, Lease)
    throttled = ProviderError("reach_limit", "429", retryable=True, status=429)
    assert store.lease.mark_retrying(lease, throttled, 0.0, "throttled") == "ok"
    lease = store.lease.begin(ref(message_id), "w2", 10)
    assert isinstance(lease, Lease)
    store.lease.mark_delivered(lease, "p1", "ok")
    stats = store.read.stats()
    assert stats["provider:429"] == before + 1
    assert store.read.dead_letter_count() == len(store.read.dead_letters(limit=1_000_000))
