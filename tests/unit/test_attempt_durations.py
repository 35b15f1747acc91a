"""Attempt durations per channel: counted in the worker process, added to the shared stats
hash at most once per interval, never lost to a Redis outage (dispatcher/store/durations.py)."""

from __future__ import annotations

import time

import fakeredis
import redis

from dispatcher.store import ReadStore
from dispatcher.store.durations import ATTEMPT_BUCKETS_MS, AttemptDurations


def stats(client: redis.Redis) -> dict[str, int]:
    return ReadStore(client).stats()


def wait_for(client: redis.Redis, field: str, value: int) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while stats(client).get(field) != value:
        assert time.monotonic() < deadline, stats(client)
        time.sleep(0.02)
    return stats(client)


def test_attempts_are_added_together_by_a_timer_not_by_the_attempt() -> None:
    client = fakeredis.FakeRedis()
    durations = AttemptDurations(client, interval=0.3)
    durations.observe("easemob", 0.2)
    durations.observe("easemob", 0.01)
    assert stats(client) == {}  # the delivery path sent nothing
    found = wait_for(client, "attempt:easemob:count", 2)
    assert found["attempt:easemob:sum_ms"] == 210
    for bound in ATTEMPT_BUCKETS_MS:
        assert found.get(f"attempt:easemob:le:{bound}", 0) == (bound >= 10) + (bound >= 200)
    durations.observe("wechat", 0.05)  # a new timer for the next interval
    wait_for(client, "attempt:wechat:count", 1)


def test_a_flush_adds_each_count_once_and_names_records_without_a_channel() -> None:
    client = fakeredis.FakeRedis()
    durations = AttemptDurations(client, interval=60)
    durations.observe("easemob", 0.01)
    durations.observe("", 3.0)  # a record older than routing names no channel
    durations.flush()  # what worker shutdown does
    found = stats(client)
    assert found["attempt:easemob:count"] == 1 and found["attempt:easemob:sum_ms"] == 10
    assert found["attempt:-:count"] == 1 and found["attempt:-:le:5000"] == 1
    assert "attempt:-:le:2500" not in found
    durations.flush()
    assert stats(client) == found  # nothing counted twice


def test_counts_survive_a_redis_outage_until_the_next_flush() -> None:
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    durations = AttemptDurations(client, interval=60)
    server.connected = False  # every command fails with ConnectionError
    durations.observe("easemob", 0.1)
    server.connected = True
    assert stats(client) == {}
    durations.flush()
    assert stats(client)["attempt:easemob:count"] == 1
