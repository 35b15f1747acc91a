"""F18: RabbitMQ as the broker is SIGKILLed under load and restarted on its own data; a
RabbitMQ memory alarm blocks publishers.

The broker is a node of this module's own (tests/rabbitmq.py, ``RabbitServer``), never
the machine's shared one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.errors import Unavailable
from tests.fault.harness import (
    MESSAGES_PATH,
    Load,
    assert_invariants,
    new_id,
    text_message,
    wait_until,
)
from tests.rabbitmq import RabbitServer, server_script

pytestmark = pytest.mark.fault

DOWN_FOR = 3.0
"""Seconds the broker stays down (the fault's length, not a wait for a condition)."""


@pytest.fixture(scope="module")
def rabbit_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    if server_script() is None:
        pytest.skip("rabbitmq-server is not installed: no RabbitMQ node of the test's own to kill")
    node = RabbitServer(tmp_path_factory.mktemp("rabbitmq")).start()
    yield node
    node.cleanup()


@pytest.fixture()
def fault_env(fault_env: dict[str, str], rabbit_node: RabbitServer) -> dict[str, str]:
    if rabbit_node.process is None or rabbit_node.process.poll() is not None:
        rabbit_node.start()
    return {**fault_env, "DISPATCHER_BROKER_URL": rabbit_node.url}


def test_rabbitmq_killed_under_load_and_restarted_loses_no_accepted_message(
    dispatcher: Any, easemob: Any, start_worker: Any, api: Any, rabbit_node: RabbitServer
) -> None:
    workers = [start_worker(), start_worker()]
    easemob.fault(path=MESSAGES_PATH, latency=0.3)
    with Load(api.submit) as load:
        wait_until(lambda: len(load.accepted) >= 20, 30, "20 submits accepted before the kill")
        rabbit_node.kill()
        down_at = time.monotonic()
        time.sleep(DOWN_FOR)
        up_at = time.monotonic()
        rabbit_node.start()  # same data dir: the quorum queue comes back with its messages
        restarted_in = time.monotonic() - up_at
        wait_until(
            lambda: 200 in load.between(up_at, time.monotonic()),
            30,
            "the API accepts again once the broker is back",
        )
    while_down = load.between(down_at + 0.5, up_at + restarted_in)  # until the node answered
    assert while_down, "the load kept submitting while the broker was down"
    assert set(while_down) == {503}, f"only 503 while the broker is down, got {set(while_down)}"
    refused = [m for _, _, status, m in load.answers if status == 503]
    assert all(dispatcher.status(m) is None for m in refused), "a 503 leaves no record"
    easemob.clear_faults()
    records = assert_invariants(dispatcher, easemob, load.accepted, timeout=90)
    print(
        f"\nF18 broker restart: {len(load.accepted)} accepted, {len(while_down)} answered 503 "
        f"while RabbitMQ was down ({DOWN_FOR:.0f}s, restarted in {restarted_in:.1f}s)"
    )
    assert all(r.state.value == "delivered" for r in records.values())
    assert all(w.alive() for w in workers), "workers reconnect without a restart"


def test_rabbitmq_memory_alarm_refuses_submits_and_keeps_no_record(
    dispatcher: Any, rabbit_node: RabbitServer
) -> None:
    accepted = dispatcher.submit(text_message(new_id("alarm")))
    rabbit_node.ctl("set_vm_memory_high_watermark", "0.000001")  # every publisher blocked
    try:
        refused = new_id("alarm")
        started = time.monotonic()
        with pytest.raises(Unavailable, match="broker unavailable"):
            dispatcher.submit(text_message(refused))
        took = time.monotonic() - started
    finally:
        rabbit_node.ctl("set_vm_memory_high_watermark", "0.4")  # RabbitMQ's default
    print(f"\nRabbitMQ memory alarm: a submit refused after {took:.1f}s")
    assert dispatcher.status(refused) is None, "a refused submit leaves no record"
    assert dispatcher.status(accepted) is not None
    assert took < 60
