"""Checks of the Redis that holds our state: its configuration and how full it is.

Two things would silently break "nothing lost" (F3, F6 in docs/reliability.md):

- an eviction policy other than ``noeviction`` lets Redis drop status records,
  queue entries and the in-flight index under memory pressure;
- no persistence (neither AOF nor RDB snapshots) loses everything on a restart.

:func:`redis_warnings` finds both. Workers and the HTTP API log them once at
start-up and ``/readyz`` lists them; short-lived producers (the CLI's ``send``,
``status``) stay quiet, so the warning is said where an operator looks.
:class:`RedisHealth` also refuses new submissions with :class:`Unavailable`
(503 at the API) while Redis memory is nearly full, reading ``INFO memory`` at
most once per ``memory_check_interval`` seconds, so a full Redis turns into a
clear answer before Redis's own OOM error (also mapped to ``Unavailable``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

from dispatcher.cluster import is_cluster
from dispatcher.config import Settings
from dispatcher.connections import REDIS_ERRORS, PoolExhausted, text
from dispatcher.errors import Busy, Unavailable

log = logging.getLogger(__name__)

_UNCHECKABLE: tuple[type[BaseException], ...] = (*REDIS_ERRORS, redis.ResponseError)


@dataclass(frozen=True)
class MemoryUsage:
    used: int
    limit: int
    """``maxmemory``; 0 when Redis has no limit."""

    @property
    def ratio(self) -> float | None:
        return self.used / self.limit if self.limit > 0 else None


def _config(client: redis.Redis, name: str) -> str | None:
    """One CONFIG GET value, or None where CONFIG is disabled (some managed services)."""
    try:
        reply = client.config_get(name)
    except redis.ResponseError:
        return None
    value = reply.get(name) if isinstance(reply, dict) else None
    return None if value is None else text(value)


def node_infos(client: redis.Redis, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the Redis, or of every primary of a Redis Cluster."""
    if not is_cluster(client):
        return [client.info(section)]
    replies = client.info(section, target_nodes=RedisCluster.PRIMARIES)
    return list(replies.values())


def redis_warnings(client: redis.Redis) -> list[str]:
    """What is unsafe in this Redis's configuration for dispatcher (empty when all is well);
    on a Redis Cluster, of its primaries (the fullest's memory, any's persistence)."""
    warnings: list[str] = []
    memory = node_infos(client, "memory")[0]
    policy = text(memory.get("maxmemory_policy", "")) or _config(client, "maxmemory-policy")
    if policy and policy != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy!r}, not 'noeviction': under memory pressure "
            "Redis will evict status records and queued deliveries (messages lost). "
            "Set maxmemory-policy noeviction."
        )
    aof = all(
        str(info.get("aof_enabled", "0")) == "1" for info in node_infos(client, "persistence")
    )
    save = _config(client, "save")
    if not aof and save is not None and save.strip() == "":
        warnings.append(
            "Redis persistence is off (appendonly no and no RDB save points): a Redis "
            "restart loses every queued message and status record. Enable appendonly yes."
        )
    return warnings


def warn_redis_configuration(client: redis.Redis, who: str) -> list[str]:
    """Log :func:`redis_warnings` loudly; returns them. A Redis that is down is not checked."""
    try:
        warnings = redis_warnings(client)
    except _UNCHECKABLE as exc:
        log.warning("%s: could not check the Redis configuration (%s)", who, exc)
        return []
    for warning in warnings:
        log.warning("UNSAFE REDIS CONFIGURATION (%s): %s", who, warning)
    return warnings


def configuration_warnings(client: redis.Redis) -> list[str]:
    """:func:`redis_warnings`, or none when Redis cannot be asked (down, CONFIG refused)."""
    try:
        return redis_warnings(client)
    except _UNCHECKABLE:
        return []


def memory_usage(client: redis.Redis) -> MemoryUsage:
    """The Redis's memory; on a Redis Cluster, the fullest primary's (the one to refuse on)."""
    usages = [
        MemoryUsage(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))
        for info in node_infos(client, "memory")
    ]
    return max(usages, key=lambda usage: (usage.ratio or 0.0, usage.used))


MEMORY_FULL = (
    "service unavailable: message storage is nearly full and new messages are refused "
    "until it drains; nothing was accepted, retry later"
)


class RedisHealth:
    """The producer's gate: new work is refused while Redis memory is nearly full."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        refuse_ratio: float,
        check_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = client
        self.refuse_ratio = refuse_ratio
        self.check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._usage: MemoryUsage | None = None
        self._refreshing = False

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> RedisHealth:
        return cls(
            client,
            refuse_ratio=settings.memory_refuse_ratio,
            check_interval=settings.memory_check_interval,
        )

    def admit(self) -> None:
        """Raise Unavailable when Redis memory is nearly full (or Redis is down)."""
        if self.refuse_ratio <= 0:
            return
        usage = self._cached_usage()
        ratio = usage.ratio if usage is not None else None
        if ratio is not None and ratio >= self.refuse_ratio:
            assert usage is not None
            raise Unavailable(
                f"Redis memory nearly full: {usage.used} of {usage.limit} bytes used "
                f"({ratio:.0%}, refusing new messages from {self.refuse_ratio:.0%}); "
                "nothing was accepted, retry later",
                public=MEMORY_FULL,
            )

    def needs_redis(self) -> bool:
        """True when the next :meth:`admit` asks Redis (else it only reads its cache)."""
        return self.refuse_ratio > 0 and not self._fresh(self._clock())

    def _fresh(self, now: float) -> bool:
        """The cached memory figure is recent enough to go by, or another caller is already
        reading a new one: under load one reading per interval, not one per request (a
        stalled Redis would otherwise hold every request's thread on INFO)."""
        checked_at = self._checked_at
        if checked_at is None:
            return False
        return self._refreshing or now - checked_at < self.check_interval

    def _cached_usage(self) -> MemoryUsage | None:
        now = self._clock()
        with self._lock:
            if self._fresh(now):
                return self._usage
            self._refreshing = True
        try:
            usage: MemoryUsage | None = memory_usage(self.redis)
        except PoolExhausted as exc:
            raise Busy(f"status store busy: {exc}") from None
        except REDIS_ERRORS as exc:
            raise Unavailable(f"status store unavailable: {exc}") from None
        except redis.ResponseError:
            usage = None  # INFO refused (a proxy or an emulation): nothing to go by
        finally:
            self._refreshing = False
        with self._lock:
            self._usage, self._checked_at = usage, now
        return usage
