"""RabbitMQ for the tests: a virtual host of the session's own on the machine's broker.

``DISPATCHER_TEST_AMQP`` names the broker (a URL without a virtual host); set, the
RabbitMQ tests must run (CI sets it when RabbitMQ answers) and fail if the broker does
not answer. Unset, 127.0.0.1:5672 with guest/guest is tried and the tests are skipped,
with the reason in the summary, when nothing answers there.

With ``rabbitmqctl`` at hand (the broker's own machine, as root or the rabbitmq user)
the session gets a private virtual host, deleted at the end; otherwise the URL's own
virtual host is shared and only the per-test queue names keep runs apart.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from dispatcher.embedded import free_port

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672"
CTL_TIMEOUT = 60.0


def amqp_answers(url: str, timeout: float = 2.0) -> bool:
    """Something accepts connections on the URL's host and port."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), timeout):
            return True
    except OSError:
        return False


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl`` on the local node; raises CalledProcessError with its output."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=CTL_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
    return done.stdout


def can_manage() -> bool:
    """``rabbitmqctl`` is installed and may talk to the local node."""
    if shutil.which("rabbitmqctl") is None:
        return False
    try:
        rabbitmqctl("list_vhosts")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError):
        return False
    return True


@dataclass
class RabbitVhost:
    """The session's place on the broker: ``url`` includes the virtual host."""

    url: str
    vhost: str
    private: bool
    """Created for this session (and deleted at its end) with ``rabbitmqctl``."""

    @classmethod
    def create(cls, base: str) -> RabbitVhost:
        base = base.rstrip("/")
        if can_manage():
            vhost = f"dispatcher-test-{uuid.uuid4().hex[:10]}"
            user = urlsplit(base).username or "guest"
            rabbitmqctl("add_vhost", vhost)
            rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
            return cls(f"{base}/{quote(vhost, safe='')}", vhost, private=True)
        path = urlsplit(base).path.lstrip("/")
        return cls(f"{base}/{path}", path or "/", private=False)

    def close_all_connections(self, reason: str) -> int:
        """Close every client connection to this virtual host, as a broker restart does;
        returns how many were closed."""
        said = rabbitmqctl("close_all_connections", "--vhost", self.vhost, reason)
        closed = re.search(r"Closed (\d+) connection", said)
        return int(closed.group(1)) if closed else 0

    def delete_queue(self, queue: str) -> None:
        """Delete a test's queue (quorum queues outlive their consumers)."""
        from kombu.connection import Connection

        with Connection(self.url) as connection:
            connection.channel().queue_delete(queue)  # RabbitMQ: fine for a queue never declared

    def delete(self) -> None:
        if self.private:
            rabbitmqctl("delete_vhost", self.vhost)


def configured_amqp() -> tuple[str, bool]:
    """(broker URL, required): required when DISPATCHER_TEST_AMQP names it."""
    given = os.environ.get("DISPATCHER_TEST_AMQP")
    return (given or DEFAULT_AMQP), bool(given)


SERVER_SCRIPT = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The node start script of the Debian/RPM packages (``/usr/sbin/rabbitmq-server`` wraps it
to run as the rabbitmq user and its shared node)."""


def server_script() -> str | None:
    """A ``rabbitmq-server`` that starts a node of our own, when installed here."""
    return SERVER_SCRIPT if os.access(SERVER_SCRIPT, os.X_OK) else None


@dataclass
class RabbitServer:
    """A RabbitMQ node of the test's own: own name, port, data dir and cookie; never the
    machine's shared broker. ``kill`` is a SIGKILL of the node; ``start`` again restarts
    it on the same data, so durable (quorum) queues come back with their messages."""

    data_dir: Path
    port: int = 0
    name: str = field(default_factory=lambda: f"dispatcher-test-{uuid.uuid4().hex[:8]}@localhost")
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, timeout: float = 60.0) -> RabbitServer:
        script = server_script()
        if script is None:
            raise FileNotFoundError(SERVER_SCRIPT)
        if not self.port:
            self.port = free_port()
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(uuid.uuid4().hex.upper())
            cookie.chmod(0o400)
        config = self.data_dir / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        plugins = self.data_dir / "enabled_plugins"
        plugins.write_text("[].\n")
        env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_CONF_ENV_FILE": os.devnull,  # not the shared node's name and settings
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.data_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.data_dir / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        self.pid_file.unlink(missing_ok=True)
        with (self.data_dir / "server.log").open("ab") as log:
            self.process = subprocess.Popen(
                [script], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                tail = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"rabbitmq-server did not start on {self.port}:\n{tail}")
            time.sleep(0.2)
        return self

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "node.pid"

    def _ready(self) -> bool:
        """The node answers AMQP and has finished booting (its pid file is written last)."""
        return self.pid_file.exists() and amqp_answers(self.url, timeout=0.5)

    def node_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` on this node (its cookie is in the node's own home)."""
        script = Path(SERVER_SCRIPT).with_name("rabbitmqctl")
        done = subprocess.run(
            [str(script), "-q", "-n", self.name, *args],
            env={**os.environ, "HOME": str(self.data_dir / "home")},
            capture_output=True,
            text=True,
            timeout=CTL_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, done.args, done.stdout, done.stderr
            )
        return done.stdout

    def kill(self) -> None:
        """SIGKILL the node, as a crash would."""
        pid = self.node_pid()
        if pid is not None and self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(30)
        self.pid_file.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.data_dir, ignore_errors=True)
