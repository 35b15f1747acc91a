"""P1 and P3 with a 3-primary Redis Cluster as the status store (``--cluster``, with
``--amqp`` as the broker: a cluster needs another broker), keys ``P1_cluster`` and
``P3_cluster``, each beside the figures of the same run with one Redis as the status store
and the same broker (``P1_amqp``, ``P3_amqp``). README, "Benchmarks"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks import harness
from tests.cluster import RedisClusterSet


def run(
    bench: Any, sim: harness.Simulator | None, only: set[str], say: Callable[[str], None]
) -> None:
    """P1 (with ``sim``) and P3 on a cluster of this run's own, into ``bench.results``."""
    from benchmarks.run import ratio

    with RedisClusterSet() as cluster:
        saved = (bench.redis, bench.redis_url, bench.store_pids)
        bench.redis, bench.redis_url = cluster.client(), cluster.url
        bench.store_pids = [node.pid or 0 for node in cluster.nodes]
        bench.broker_url = bench.args.amqp
        try:
            if "P1" in only and sim is not None:
                ours = bench.p1_again(sim, "cluster", "on a Redis Cluster status store")
                single = bench.results.get("P1_amqp", {})
                bench.results["P1_cluster"] = {
                    "value": ours["per_second"],
                    "baseline": single.get("value"),
                    "ratio": ratio(ours["per_second"], single.get("value")),
                    "goal": "reported: a 3-primary Redis Cluster status store vs one Redis, "
                    "both with the RabbitMQ broker of this run",
                    "unit": "messages/s end to end (submit -> delivered)",
                    "ours": ours,
                }
            if "P3" in only:
                say("P3 on a Redis Cluster status store, RabbitMQ broker")
                bench.p3("P3_cluster")
                single = bench.results.get("P3_amqp", {})
                bench.results["P3_cluster"]["single_redis_value"] = single.get("value")
        finally:
            bench.redis.close()
            bench.redis, bench.redis_url, bench.store_pids = saved
            bench.broker_url = None
            bench.delete_amqp_queues()
