"""A Redis Cluster of our own on loopback: three primaries, each a child process
(dispatcher/embedded.py's ``RedisServer`` with ``cluster-enabled yes``), joined with
``redis-cli --cluster create``.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from dispatcher.embedded import RedisServer, free_port

PRIMARIES = 3


def _cluster_args(data_dir: Path) -> list[str]:
    return [
        "--cluster-enabled", "yes",
        "--cluster-config-file", str(data_dir / "nodes.conf"),
        "--cluster-node-timeout", "5000",
        "--cluster-port", str(free_port()),  # not port + 10000: that may pass 65535
    ]  # fmt: skip


class RedisClusterSet:
    """``PRIMARIES`` primaries sharing the 16384 slots; ``url`` names the cluster."""

    def __init__(self, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="dispatcher-cluster-"))
        self.nodes = [
            RedisServer(
                data_dir=self.root / f"node{n}",
                extra_args=_cluster_args(self.root / f"node{n}"),
            )
            for n in range(PRIMARIES)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}"

    def start(self, timeout: float = 30.0) -> RedisClusterSet:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or shutil.which("valkey-cli")
        if cli is None:
            self.cleanup()
            raise RuntimeError("redis-cli (or valkey-cli) is needed to create a Redis Cluster")
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        deadline = time.monotonic() + timeout
        while not self._settled():
            if time.monotonic() > deadline:
                self.cleanup()
                raise TimeoutError("the Redis Cluster did not settle (state ok on every node)")
            time.sleep(0.1)
        return self

    def _settled(self) -> bool:
        try:
            for node in self.nodes:
                with redis.Redis(port=node.port, socket_timeout=1) as client:
                    state = client.execute_command("CLUSTER INFO").get("cluster_state")
                if state not in ("ok", b"ok"):
                    return False
        except redis.RedisError:
            return False
        return True

    def client(self) -> redis.RedisCluster:
        """A plain cluster client."""
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port)

    def flush(self) -> None:
        """Empty every primary."""
        for node in self.nodes:
            with redis.Redis(port=node.port) as client:
                client.flushall()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RedisClusterSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
