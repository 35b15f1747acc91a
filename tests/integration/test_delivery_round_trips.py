"""What one delivery attempt costs in Redis round trips, against a real Redis and the
Easemob simulator over HTTP: the lease script also takes the rate slot of a message
whose costs are known (two round trips), and never charges a slot twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.connection

from dispatcher import delivery
from dispatcher.channels.easemob import NAME as EASEMOB
from dispatcher.channels.easemob import EasemobChannel
from dispatcher.connections import redis_client
from dispatcher.ids import new_message_id
from dispatcher.models import parse_message
from dispatcher.store import StatusStore
from tests.conftest import ref, settings_from_env

pytestmark = pytest.mark.integration

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}


@pytest.fixture()
def round_trips(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every command or pipeline this process sends to Redis, from now on."""
    sent: list[object] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    yield sent


def test_a_text_attempt_takes_two_round_trips_and_one_slot(
    worker_env: dict[str, str], easemob: Any, round_trips: list[object]
) -> None:
    settings = settings_from_env({**worker_env, "DISPATCHER_EASEMOB_CALLS_PER_SECOND": "1"})
    client = redis_client(settings)
    store = StatusStore.from_settings(client, settings)
    channel = EasemobChannel(settings, client)
    run = {"settings": settings, "store": store, "channels": {EASEMOB: channel}}
    try:
        ids = [ref(new_message_id(settings.id_prefix)) for _ in range(3)]
        for message_ref in ids:
            store.submit.create(
                store.submit.prepare(message_ref, parse_message(TEXT), channel=EASEMOB)
            )
        cold = delivery.attempt(ids[0], resolve_media=None, **run)  # fetches the token
        assert cold.state == "delivered"
        time.sleep(1.1)  # 1 call/s: the next slot is free again

        round_trips.clear()
        started = time.monotonic()
        warm = delivery.attempt(ids[1], resolve_media=None, **run)
        took = time.monotonic() - started
        assert warm.state == "delivered"
        assert len(round_trips) == 2, "lease with the rate slot, then the outcome"
        assert took < 0.4, f"a prepaid slot must not be waited for again ({took:.2f}s)"

        # The slot is charged once: the next call is about one interval (~1 s) away, so
        # this attempt leases without a slot and waits for its own.
        round_trips.clear()
        started = time.monotonic()
        assert delivery.attempt(ids[2], resolve_media=None, **run).state == "delivered"
        waited = time.monotonic() - started
        assert 0.2 < waited < 1.2, f"waited {waited:.2f}s for the next slot"
        assert len(round_trips) >= 3
    finally:
        channel.close()
        client.close()
    received = [r for r in easemob.requests() if r["path"].endswith("/messages")]
    assert len(received) == 3
