"""F3, F4, F5: Redis killed and restarted from its AOF, absent at start, connections cut."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from dispatcher.errors import Unavailable
from tests.fault.harness import (
    BOTH_BROKERS,
    MESSAGES_PATH,
    Load,
    assert_invariants,
    new_id,
    text_message,
    wait_until,
)

pytestmark = pytest.mark.fault


def test_redis_killed_under_load_and_restarted_from_its_aof_loses_no_accepted_message(
    dispatcher: Any, easemob: Any, start_worker: Any, api: Any, redis_server: Any
) -> None:
    start_worker()
    start_worker()
    easemob.fault(path=MESSAGES_PATH, latency=0.3)
    with Load(api.submit) as load:
        wait_until(lambda: len(load.accepted) >= 20, 30, "the API accepts the load")
        redis_server.kill()
        down_at = time.monotonic()
        time.sleep(3)  # the outage itself
        up_at = time.monotonic()
        redis_server.start()  # same port and data dir: replays the AOF
        # Without a restart of the API: it accepts again once Redis is back.
        wait_until(lambda: load.accepted_since(up_at), 60, "a 200 after Redis is back")
    while_down = load.between(down_at, up_at)
    assert while_down, "the load kept submitting while Redis was down"
    assert set(while_down) == {503}, f"only 503 while Redis is down, got {set(while_down)}"
    before = [s for _, at, s, _ in load.answers if at < down_at]
    print(
        f"\nF3: {len(load.accepted)} accepted ({len(before)} before the kill), "
        f"{len(while_down)} answered 503 while Redis was down"
    )
    easemob.clear_faults()
    records = assert_invariants(dispatcher, easemob, load.accepted, timeout=60)
    assert all(r.state.value == "delivered" for r in records.values())


def test_redis_absent_at_start_api_and_workers_connect_when_it_appears(
    dispatcher: Any,
    easemob: Any,
    start_worker: Any,
    api: Any,
    redis_server: Any,
) -> None:
    redis_server.stop()
    workers = [start_worker(wait_ready=False), start_worker(wait_ready=False)]
    refused = 0
    started = time.monotonic()
    while time.monotonic() - started < 20:  # F4 in docs/reliability.md: Redis appears 20 s later
        reply = api.submit(text_message(new_id("absent")))
        assert reply.status_code == 503, reply.text
        refused += 1
        with pytest.raises(Unavailable):
            dispatcher.submit(text_message(new_id("absent")))
        time.sleep(1)
    assert all(w.alive() for w in workers), "workers wait for Redis instead of exiting"
    redis_server.start()
    appeared = time.monotonic()
    for worker in workers:
        worker.wait_ready(timeout=45)
    ready_in = time.monotonic() - appeared

    ids = []
    for _ in range(10):
        message_id = new_id("absent")
        assert api.submit(text_message(message_id)).status_code == 200
        ids.append(message_id)
    ids.append(dispatcher.submit(text_message(new_id("absent"))))
    records = assert_invariants(dispatcher, easemob, ids, timeout=30)
    print(
        f"\nF4: {refused} submissions answered 503 meanwhile; workers ready {ready_in:.1f}s after Redis"
    )
    assert all(r.state.value == "delivered" for r in records.values())


CUT_ROUNDS = 6
"""Rounds of connection cuts, two seconds apart, while messages are submitted."""


@BOTH_BROKERS
def test_workers_keep_consuming_while_redis_client_connections_are_killed(
    dispatcher: Any,
    easemob: Any,
    start_worker: Any,
    redis_server: Any,
    broker: str,
    request: pytest.FixtureRequest,
) -> None:
    # With RabbitMQ every cut also closes every AMQP connection of the test's virtual host.
    rabbitmq = request.getfixturevalue("rabbitmq") if broker == "amqp" else None
    broker_cuts = 0
    workers = [start_worker(), start_worker()]
    easemob.fault(path=MESSAGES_PATH, latency=0.2)
    admin = redis.Redis.from_url(redis_server.url)
    ids: list[str] = []
    kills = 0
    started = time.monotonic()
    next_kill = started + 1.5
    # Rounds counted, not seconds: on a busy machine a round of submits takes longer.
    while kills < CUT_ROUNDS:
        assert time.monotonic() - started < 120, f"only {kills} rounds of cuts in 120 s"
        for _ in range(5):
            message_id = new_id("cut")
            try:
                dispatcher.submit(text_message(message_id))
            except Unavailable:
                continue  # our own connection was cut mid-call: nothing accepted
            ids.append(message_id)
        if time.monotonic() >= next_kill:
            kills += 1
            killed = admin.client_kill_filter(_type="normal", skipme=True)
            assert killed > 0
            if rabbitmq is not None:
                broker_cuts += rabbitmq.close_all_connections("fault test: connections cut")
            next_kill += 2.0
        time.sleep(0.25)
    # After the last cut: every worker still consumes.
    after = [dispatcher.submit(text_message(new_id("after"))) for _ in range(20)]
    easemob.clear_faults()
    records = assert_invariants(dispatcher, easemob, ids + after, timeout=45)
    print(
        f"\nF5, {broker} broker: {kills} rounds of CLIENT KILL TYPE normal "
        f"({broker_cuts} AMQP connections closed); {len(ids) + len(after)} delivered"
    )
    if rabbitmq is not None:
        assert broker_cuts >= 2 * kills, "each round closed the workers' AMQP connections"
    assert all(w.alive() for w in workers)
    assert all(r.state.value == "delivered" for r in records.values())
    logs = [w.log() for w in workers]
    for worker, log in zip(workers, logs, strict=True):
        consumed_after = sum(f"getMessageId={m} delivered" in log for m in after)
        print(f"worker {worker.pid}: {consumed_after} of the last 20 after the cuts")
    admin.close()
