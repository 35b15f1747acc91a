"""Metrics per lane, (provider app, client, priority): the backlog, deliveries and the
wait before the first attempt, counted where they happen and read by ``/metrics``
(dispatcher/store/lanes.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from dispatcher import keys
from dispatcher.ids import MessageRef
from dispatcher.store import Lease, StatusStore
from dispatcher.store.lanes import LANE_PREFIX
from dispatcher.withdraw import Withdrawal
from tests.unit.test_api_operations import scrape
from tests.unit.test_api_support import CLIENTS, TEXT, Harness, envelope_ok, make_harness

SHOP = {"org": "o2", "app": "a2", "client_id": "YXA6shop", "client_secret": "shop-secret"}
HIGH = 'app="shop",client="c2",priority="high"'


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    clients = {**CLIENTS, "c2": {**CLIENTS["c2"], "max_priority": "high", "easemob_app": "shop"}}
    harness = make_harness(redis_url, clients=clients, easemob_apps={"shop": SHOP})
    clear_lanes(harness)
    yield harness
    clear_lanes(harness)
    harness.close()


def clear_lanes(api: Harness) -> None:
    fields = [
        f
        for f in api.redis.hkeys(keys.counters_shard().stats)
        if f.startswith(LANE_PREFIX.encode())
    ]
    if fields:
        api.redis.hdel(keys.counters_shard().stats, *fields)


def lane_field(api: Harness, field: str, value: int) -> None:
    """Wait (bounded) until the counts of the processes reach the stats hash."""
    deadline = time.monotonic() + 10
    while int(api.redis.hget(keys.counters_shard().stats, field) or 0) != value:
        assert time.monotonic() < deadline, api.redis.hgetall(keys.counters_shard().stats)
        time.sleep(0.05)


def labels(text: str) -> str:
    return ",".join(sorted(part.replace('"', "") for part in text.split(",")))


def test_backlog_deliveries_and_waits_by_app_client_and_priority(api: Harness) -> None:
    ids = []
    for _ in range(2):
        response = api.submit({**TEXT, "priority": "high"}, client="c2")
        ids.append(envelope_ok(response)["data"]["getMessageId"])
    assert api.submit(TEXT).status_code == 200
    lane_field(api, "lane:shop|c2|high:accepted", 2)
    lane_field(api, "lane:default|c1|normal:accepted", 1)

    store = StatusStore.from_settings(api.redis, api.settings)
    lease = store.lease.begin(MessageRef("c2", ids[0]), "owner-1", 60)
    assert isinstance(lease, Lease) and lease.app == "shop" and lease.priority == "high"
    assert lease.waited is not None and 0 <= lease.waited < 30
    store.lease.mark_delivered(lease, "p1", "delivered via easemob")
    store.lease.durations.flush()

    samples = scrape(api)
    high = labels(HIGH)
    assert samples[f"dispatcher_lane_backlog{{{high}}}"] == 1
    assert samples[f"dispatcher_lane_delivered_total{{{high}}}"] == 1
    assert samples[f"dispatcher_lane_wait_seconds_count{{{high}}}"] == 1
    assert samples[f"dispatcher_lane_wait_seconds_bucket{{{labels(HIGH + ',le=+Inf')}}}"] == 1
    normal = labels('app="default",client="c1",priority="normal"')
    assert samples[f"dispatcher_lane_backlog{{{normal}}}"] == 1
    assert samples[f"dispatcher_lane_delivered_total{{{normal}}}"] == 0


def test_a_cancelled_message_leaves_its_lanes_backlog(api: Harness) -> None:
    response = api.submit({**TEXT, "priority": "bulk"})
    message_id = envelope_ok(response)["data"]["getMessageId"]
    lane_field(api, "lane:default|c1|bulk:accepted", 1)
    store = StatusStore.from_settings(api.redis, api.settings)
    Withdrawal(api.settings, store).cancel(MessageRef("c1", message_id), "test")
    store.lease.durations.flush()
    samples = scrape(api)
    assert (
        samples[f"dispatcher_lane_backlog{{{labels('app=default,client=c1,priority=bulk')}}}"] == 0
    )
