"""Attempt durations per channel: counted in the worker process, added to the shared stats
hash at most once per interval, never lost to a Redis outage (dispatcher/store/durations.py)."""

from __future__ import annotations

import time

import fakeredis
import redis

from dispatcher import keys
from dispatcher.store.durations import ATTEMPT_BUCKETS_MS, AttemptDurations


def stats(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(keys.STATS).items()}


def test_the_first_attempt_is_added_at_once_with_its_buckets() -> None:
    client = fakeredis.FakeRedis()
    durations = AttemptDurations(client, interval=60)
    durations.observe("easemob", 0.2)
    found = stats(client)
    assert found["attempt:easemob:count"] == 1
    assert found["attempt:easemob:sum_ms"] == 200
    assert all(
        found.get(f"attempt:easemob:le:{b}", 0) == (1 if b >= 200 else 0)
        for b in ATTEMPT_BUCKETS_MS
    )


def test_attempts_within_the_interval_wait_for_one_flush() -> None:
    client = fakeredis.FakeRedis()
    durations = AttemptDurations(client, interval=60)
    durations.observe("easemob", 0.01)
    durations.observe("easemob", 0.02)
    durations.observe("", 3.0)  # a record older than routing names no channel
    assert stats(client)["attempt:easemob:count"] == 1
    durations.flush()
    found = stats(client)
    assert found["attempt:easemob:count"] == 2 and found["attempt:easemob:sum_ms"] == 30
    assert found["attempt:-:count"] == 1 and found["attempt:-:le:5000"] == 1
    durations.flush()
    assert stats(client) == found  # nothing counted twice


def test_an_idle_worker_flushes_by_timer() -> None:
    client = fakeredis.FakeRedis()
    durations = AttemptDurations(client, interval=0.2)
    durations.observe("wechat", 0.05)
    durations.observe("wechat", 0.05)  # within the interval: the timer takes it
    deadline = time.monotonic() + 10
    while stats(client).get("attempt:wechat:count") != 2:
        assert time.monotonic() < deadline, stats(client)
        time.sleep(0.02)


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
