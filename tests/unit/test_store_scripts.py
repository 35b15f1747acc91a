"""The store's script helper: names in, KEYS/ARGV out, so no caller counts positions."""

from __future__ import annotations

import fakeredis

from dispatcher.store.scripts import load


def test_optional_keys_are_left_out_and_their_presence_is_the_first_argument() -> None:
    create = load("create")
    operands = create.bind(
        {
            "message": "m",
            "history": "h",
            "inflight": "i",
            "stats": "s",
            "queue": None,
            "rate": "r",
            "guard": None,
            "schedule": "z",
            "pending": None,
            "flag": None,
        },
        {
            "op": "op-1",
            "fingerprint": "fp",
            "ttl": 10,
            "history_limit": 5,
            "queued_grace_ms": 1000,
            "member": "default:m0",
            "entry": None,
            "task": None,
            "gate_interval_ms": 1.5,
            "gate_tolerance_ms": 0,
            "guard_ttl_ms": 0,
            "send_at_ms": 7,
            "immediate_ms": 1000,
            "ring_ms": 5000,
            "fields": ["type", "1"],
        },
    )
    assert operands == [
        6,
        "m",
        "h",
        "i",
        "s",
        "r",
        "z",
        "010100",
        "op-1",
        "fp",
        10,
        5,
        1000,
        "default:m0",
        "",
        "",
        1.5,
        0,
        0,
        7,
        1000,
        5000,
        "type",
        "1",
    ]


def test_a_rest_of_keys_and_arguments_reaches_the_script_as_tables() -> None:
    client = fakeredis.FakeRedis()
    acquire = load("rate_acquire")
    rates = ["a", "b"]
    assert acquire(client, {"rates": rates}, {"dimensions": [1000, 0, 1, 1000, 0, 1]}) == 0
    assert all(client.exists(key) for key in rates)
    wait_us = acquire(client, {"rates": rates}, {"dimensions": [1000, 0, 1, 1000, 0, 1]})
    assert 0 < wait_us <= 1_000_000


def test_a_script_is_loaded_again_after_the_server_forgot_it() -> None:
    client = fakeredis.FakeRedis()
    drop = load("delete_if_equal")
    client.set("k", "v")
    client.script_flush()
    assert drop(client, {"target": "k"}, {"expected": "v"}) == 1
    assert not client.exists("k")
