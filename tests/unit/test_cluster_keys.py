"""Redis Cluster: ``redis+cluster://`` URLs, the settings a cluster status store needs, and
the shards' key layout (dispatcher/cluster.py, dispatcher/keys.py)."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from dispatcher import keys
from dispatcher.cluster import cluster_target
from dispatcher.config import Settings
from dispatcher.ids import MessageRef

CLUSTER = "redis+cluster://127.0.0.1:7000,127.0.0.1:7001"


def test_a_cluster_url_names_its_nodes_and_login_and_hides_the_password() -> None:
    target = cluster_target("redis+cluster://u:s%40cret@h1:7000,[::1]:7001,h3")
    assert target is not None
    assert target.nodes == (("h1", 7000), ("::1", 7001), ("h3", 6379))
    assert (target.username, target.password) == ("u", "s@cret")
    assert "s@cret" not in repr(target)
    assert cluster_target("redis://127.0.0.1:6379/0") is None
    for bad in ("redis+cluster://", "redis+cluster://h1:7000/0", "redis+cluster://h1:port"):
        with pytest.raises(ValueError) as refused:
            cluster_target(bad)
        assert "cret" not in str(refused.value)


def test_a_cluster_status_store_needs_another_broker_and_no_replica_minimum() -> None:
    with pytest.raises(ValidationError, match="DISPATCHER_BROKER_URL"):
        Settings(redis_url=CLUSTER)
    with pytest.raises(ValidationError, match="DISPATCHER_BROKER_URL"):
        Settings(redis_url=CLUSTER, broker_url=CLUSTER)
    with pytest.raises(ValidationError, match="MIN_REPLICAS"):
        Settings(redis_url=CLUSTER, broker_url="amqp://h/", redis_min_replicas=1)
    assert (
        Settings(redis_url=CLUSTER, broker_url="amqp://h/", delivery_batch=0).broker_url
        == "amqp://h/"
    )


def test_the_doorbell_is_refused_with_a_cluster_status_store_only() -> None:
    with pytest.raises(ValidationError, match=r"DISPATCHER_DELIVERY_BATCH.*cross-slot"):
        Settings(redis_url=CLUSTER, broker_url="amqp://h/", delivery_batch=8)
    assert Settings(redis_url="redis://h:6379/0", delivery_batch=8).delivery_batch == 8
    sentinel = "redis+sentinel://10.0.0.1:26379,10.0.0.2/orders/2"
    assert Settings(redis_url=sentinel, delivery_batch=8).delivery_batch == 8


def test_each_shard_keeps_its_keys_in_one_slot_and_the_shards_spread_over_the_slots() -> None:
    shards = keys.shards()
    assert len(shards) == keys.SHARDS == 16
    share = 16384 // keys.SHARDS
    for shard in shards:
        ref = next(
            MessageRef("ns", f"m{i}") for i in range(10_000) if keys.shard_of(f"ns:m{i}") == shard
        )
        slots = {
            key_slot(key.encode())
            for key in (
                keys.message(ref), keys.history(ref), shard.inflight, shard.schedule,
                shard.dead, shard.stats, shard.rejected, shard.outbox,
            )
        }  # fmt: skip
        assert len(slots) == 1
        assert shard.index * share <= slots.pop() < (shard.index + 1) * share
        assert keys.ref_of_record(keys.message(ref)) == ref
    # Members spread over the shards about evenly.
    spread = Counter(keys.shard_of(f"default:m{i}").index for i in range(16_000))
    assert min(spread.values()) > 800


def test_a_limiter_s_dimensions_and_a_gate_s_keys_share_a_slot() -> None:
    assert len({key_slot(keys.rate_limit(n).encode()) for n in ("a", "b:c", "submit:x")}) == 1
    assert key_slot(keys.replay_guard("c", "n").encode()) == key_slot(
        keys.rate_limit("submit:c").encode()
    )
    webhook_keys = (keys.WEBHOOK_DUE, keys.WEBHOOK_DEAD, keys.webhook_delivery("e:w"),
                    keys.webhook_endpoint("e"), keys.WEBHOOK_TAKEN_OPEN + "w")  # fmt: skip
    assert len({key_slot(k.encode()) for k in webhook_keys}) == 1
