"""``redis+cluster://`` URLs: a Redis Cluster holding the status store.

``DISPATCHER_REDIS_URL`` may name one::

    redis+cluster://[[user]:password@]host:port[,host:port...]

The hosts are any nodes of the cluster to start from (port 6379 when left out); the
client learns the others and the slots each serves, and follows a resharding or a
failover by itself. Every store script touches keys of one hash slot
(dispatcher/keys.py, docs/architecture.md "Redis keys"). Celery's Redis transport
cannot use a cluster, so ``DISPATCHER_BROKER_URL`` must then name another broker
(docs/deployment.md, "Redis Cluster and RabbitMQ").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import ClusterNode, RedisCluster

from dispatcher.sentinel import host_ports, login_and_hosts

CLUSTER_SCHEME = "redis+cluster"
CLUSTER_PORT = 6379


@dataclass(frozen=True)
class ClusterTarget:
    """The nodes to start from and how to log in to every node."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line


def is_cluster_url(url: str) -> bool:
    return url.lower().startswith(f"{CLUSTER_SCHEME}://")


def cluster_target(url: str) -> ClusterTarget | None:
    """The cluster ``url`` names; None for a URL of another scheme. ValueError (never
    naming the password) for a ``redis+cluster://`` URL that is malformed."""
    if not is_cluster_url(url):
        return None
    parts = urlsplit(url)
    username, password, hosts = login_and_hosts(parts.netloc)
    if not hosts or parts.path.strip("/"):
        raise ValueError(
            f"{CLUSTER_SCHEME} URL must be {CLUSTER_SCHEME}://host:port[,host:port...]"
        )
    try:
        nodes = host_ports(hosts, CLUSTER_PORT)
    except ValueError:
        raise ValueError(f"{CLUSTER_SCHEME} URL: ports must be numbers") from None
    return ClusterTarget(nodes, username, password)


def is_cluster(client: Any) -> bool:
    """``client`` talks to a Redis Cluster (a blocking or an asyncio cluster client)."""
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def cluster_client(target: ClusterTarget, **options: Any) -> redis.Redis:
    """A blocking cluster client: one pool per node, bounded by ``max_connections``.

    Typed as the single-node client: the store sends only commands both serve, and
    routes every script by its keys' one slot."""
    client = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],  # type: ignore[no-untyped-call]
        username=target.username,
        password=target.password,
        **options,
    )
    return client  # type: ignore[return-value]


def async_cluster_client(target: ClusterTarget, **options: Any) -> redis.asyncio.Redis:
    """:func:`cluster_client` for asyncio code."""
    client = AsyncRedisCluster(
        startup_nodes=[AsyncClusterNode(host, port) for host, port in target.nodes],
        username=target.username,
        password=target.password,
        **options,
    )
    return client  # type: ignore[return-value]
