"""Scripts re-run after a lost reply answer what the first run did (docs/reliability.md, S5).

Each test loses the reply of one script call in a TCP proxy: Redis ran the script, the
client's connection is cut, and redis-py (with the service's retry settings) sends the
same call again on a new connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatcher.config import Settings
from dispatcher.connections import redis_client
from dispatcher.errors import DeliveryError
from dispatcher.gate import Gate
from dispatcher.models import parse_message
from dispatcher.store import CreateOutcome, Lease, StatusStore, StorePolicy, Transition
from dispatcher.store.scripts import load
from tests.conftest import ref
from tests.lost_reply import ReplyLosingProxy

pytestmark = pytest.mark.integration

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}
BUSY = DeliveryError("unavailable", "503", retryable=True, status=503)


@pytest.fixture()
def proxy(redis_url: str) -> Iterator[ReplyLosingProxy]:
    proxy = ReplyLosingProxy(redis_url).start()
    yield proxy
    proxy.close()


@pytest.fixture()
def store(proxy: ReplyLosingProxy) -> Iterator[StatusStore]:
    client = redis_client(Settings(redis_url=proxy.url))
    for name in ("create", "lease", "finish", "replay"):  # the lost reply is the script's own
        client.script_load(load(name).source)
    yield StatusStore(client, StorePolicy(ttl=600))
    client.close()


def leased(store: StatusStore, message_id: str) -> Lease:
    store.submit.create(store.submit.prepare(ref(message_id), parse_message(TEXT), channel="e"))
    lease = store.lease.begin(ref(message_id), "w1", 60)
    assert isinstance(lease, Lease)
    return lease


def test_a_retry_whose_reply_was_lost_is_still_scheduled(
    store: StatusStore, proxy: ReplyLosingProxy
) -> None:
    lease = leased(store, "lost-retry")
    proxy.lose_next_reply(b"EVALSHA")
    assert store.lease.mark_retrying(lease, BUSY, 2.0, "503") is Transition.OK
    assert proxy.lost == 1
    record = store.read.get(ref("lost-retry"))
    assert record is not None and record.state == "retrying"
    assert sum(h.state == "retrying" for h in record.history) == 1, "it ran once"


def test_a_delivery_whose_reply_was_lost_is_confirmed(
    store: StatusStore, proxy: ReplyLosingProxy
) -> None:
    lease = leased(store, "lost-delivered")
    proxy.lose_next_reply(b"EVALSHA")
    assert store.lease.mark_delivered(lease, "p-1", "delivered") is Transition.OK
    assert proxy.lost == 1


def test_a_create_behind_the_gate_whose_reply_was_lost_answers_created(
    store: StatusStore, proxy: ReplyLosingProxy
) -> None:
    gate = Gate.for_client(
        "shop", rate_per_second=1000, burst=10, guard="test:guard:lost", guard_ttl_ms=60_000
    )
    call = store.submit.prepare(ref("lost-create"), parse_message(TEXT), channel="e", gate=gate)
    proxy.lose_next_reply(b"EVALSHA")
    assert store.submit.create(call).outcome is CreateOutcome.CREATED
    assert proxy.lost == 1
    again = store.submit.prepare(ref("lost-create"), parse_message(TEXT), channel="e", gate=gate)
    assert store.submit.create(again).outcome is CreateOutcome.REPLAYED, "the guard still holds"


def test_a_replay_whose_reply_was_lost_answers_ok(
    store: StatusStore, proxy: ReplyLosingProxy
) -> None:
    lease = leased(store, "lost-replay")
    assert store.lease.mark_dead(lease, BUSY, "attempts used") is Transition.OK
    proxy.lose_next_reply(b"EVALSHA")
    assert store.recovery.replay(ref("lost-replay")) == "ok"
    assert proxy.lost == 1
    record = store.read.get(ref("lost-replay"))
    assert record is not None and record.state == "queued"
