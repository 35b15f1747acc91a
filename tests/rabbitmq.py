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

import os
import re
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

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

    def delete(self) -> None:
        if self.private:
            rabbitmqctl("delete_vhost", self.vhost)


def configured_amqp() -> tuple[str, bool]:
    """(broker URL, required): required when DISPATCHER_TEST_AMQP names it."""
    given = os.environ.get("DISPATCHER_TEST_AMQP")
    return (given or DEFAULT_AMQP), bool(given)
