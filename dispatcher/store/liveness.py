"""Worker liveness: every process that takes leases beats, so recovery knows a dead one.

A lease names its owner as ``<process>:<attempt>`` (:func:`process_identity`). Each such
process runs a :class:`Heartbeat`: every quarter of the worker timeout it records its last
beat in every shard's ``beats`` set (``lua/beat.lua``; dispatcher/keys.py: each shard's
recovery reads the beats of its own slot). A lease's in-flight deadline is
its end or, sooner, one worker timeout from now (``lua/lease.lua``), so the reaper looks at
it while it runs: a holder that still beats keeps it, a holder whose last beat is older
than the timeout is dead and its lease is broken and its message published again
(``lua/claim_overdue.lua``) — seconds after a SIGKILL instead of at the lease's end. A
process that never beat is unknown: its leases run to their end, as before.

A reaper only declares others dead once its own process has beaten without a gap for
half a timeout (:meth:`Heartbeat.watching_since`): after a Redis outage every beat is
old, and each live process gets two of its beats to show it is alive.
(docs/reliability.md, "Recovery".)
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import ClassVar, Self

import redis

from dispatcher import keys
from dispatcher.background import BackgroundLoop
from dispatcher.connections import REDIS_ERRORS
from dispatcher.store.policy import StorePolicy
from dispatcher.store.scripts import load

log = logging.getLogger(__name__)

BEAT_KEEP_MS = 86_400_000
"""A process whose last beat is a day old leaves the shards' ``beats`` sets."""

_identity: tuple[int, str] = (0, "")


def process_identity() -> str:
    """This process among all workers: host, pid and a random part drawn once per process
    (a pid reused after a restart is another process; a forked child draws its own)."""
    global _identity
    pid, name = _identity
    if pid != os.getpid():
        pid = os.getpid()
        name = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
        _identity = (pid, name)
    return name


class LivenessStore:
    def __init__(self, client: redis.Redis, policy: StorePolicy) -> None:
        self.redis = client
        self.policy = policy
        self._beat = load("beat")

    def beat(self, process: str) -> int:
        """Record a beat of ``process`` in every shard; Redis's time of it (ms), as the
        first shard's node tells it."""
        times = [
            self._beat(
                self.redis, {"beats": shard.beats}, {"process": process, "keep_ms": BEAT_KEEP_MS}
            )
            for shard in keys.shards()
        ]
        return int(times[0])


@dataclass
class Heartbeat(BackgroundLoop):
    """Beats for this process every quarter of the worker timeout, from its first call to
    :meth:`start` (which beats once before it returns) until the process ends."""

    store: LivenessStore
    process: str = field(default_factory=process_identity)
    _since_ms: int | None = field(default=None, init=False)
    _last_ms: int | None = field(default=None, init=False)
    thread_name: ClassVar[str] = "dispatcher-heartbeat"

    @property
    def interval(self) -> float:
        return self.store.policy.worker_timeout / 4

    def beat_once(self) -> None:
        try:
            now = self.store.beat(self.process)
        except REDIS_ERRORS as exc:
            log.warning("heartbeat: Redis unavailable (%s); trying again", exc)
            self._since_ms = None
            return
        timeout_ms = self.store.policy.worker_timeout_ms
        if self._since_ms is None or self._last_ms is None or now - self._last_ms > timeout_ms:
            self._since_ms = now  # a gap as long as the timeout: start watching again
        self._last_ms = now

    def watching_since(self) -> int | None:
        """Since when (ms, Redis's clock) this process has beaten without a gap; None when
        its last beat failed. Others may be declared dead half a timeout after it."""
        return self._since_ms

    def start(self) -> Self:
        self.beat_once()
        super().start()
        return self

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat_once()
