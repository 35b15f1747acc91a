"""The API's view of a broker other than the status store's Redis: is it alive, and how
many messages wait in each queue.

A Redis broker is probed like the store (a short-timeout redis-py client, see
dispatcher/api/app.py); RabbitMQ with :class:`AmqpProbe`. Both only need ``ping`` and
``close`` for ``/readyz`` (:class:`Probe`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Protocol

from amqp.exceptions import NotFound
from kombu.connection import Connection

log = logging.getLogger(__name__)


class Probe(Protocol):
    """What ``/readyz`` asks of a dependency: a round trip that raises when it is down."""

    def ping(self) -> Any: ...

    def close(self) -> None: ...


class BrokerUnreachable(ConnectionError):
    """The broker did not answer within the probe's timeout (or refused us)."""


class AmqpProbe:
    """RabbitMQ for ``/readyz`` and ``/metrics``: one connection with short timeouts.

    Opened on first use and dropped after any error, so a broker that comes back is
    found again on the next call. Every call is a round trip on that connection (a
    channel opened, or a passive queue declare), so a broker that stopped answering is
    reported within ``timeout`` seconds. Blocking: call it off the event loop.
    """

    def __init__(self, url: str, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def _open(self) -> Connection:
        if self._connection is None:
            connection = Connection(  # type: ignore[no-untyped-call]
                self._url,
                connect_timeout=self._timeout,
                heartbeat=0,  # no background thread: each call is its own liveness check
                transport_options={"read_timeout": self._timeout, "write_timeout": self._timeout},
            )
            try:
                connection.ensure_connection(max_retries=0, timeout=self._timeout)  # type: ignore[no-untyped-call]
            except Exception:
                self._close(connection)
                raise
            self._connection = connection
        return self._connection

    def _call(self, what: str, action: Any) -> Any:
        with self._lock:
            try:
                return action(self._open())
            except Exception as exc:  # kombu, py-amqp and socket errors alike: drop, retry later
                if self._connection is not None:
                    self._close(self._connection)
                    self._connection = None
                raise BrokerUnreachable(f"broker {what}: {type(exc).__name__}: {exc}") from None

    def ping(self) -> bool:
        """Raise :class:`BrokerUnreachable` unless RabbitMQ answers within the timeout."""

        def round_trip(connection: Connection) -> bool:
            connection.channel().close()  # type: ignore[no-untyped-call]
            return True

        result: bool = self._call("ping", round_trip)
        return result

    def depths(self, queues: list[str]) -> list[int]:
        """Messages ready in each queue (0 for a queue not declared yet)."""

        def declare(connection: Connection) -> list[int]:
            return [_ready(connection, queue) for queue in queues]

        found: list[int] = self._call("queue depth", declare)
        return found

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._close(self._connection)
                self._connection = None

    @staticmethod
    def _close(connection: Connection) -> None:
        with contextlib.suppress(Exception):
            connection.close()  # type: ignore[no-untyped-call]


def _ready(connection: Connection, queue: str) -> int:
    channel = connection.channel()  # type: ignore[no-untyped-call]
    try:
        declared = channel.queue_declare(queue=queue, passive=True)
    except NotFound:
        return 0  # the broker closed this channel: nothing published to the queue yet
    with contextlib.suppress(Exception):
        channel.close()
    return int(declared.message_count)
