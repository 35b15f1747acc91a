"""``redis+sentinel://`` URLs: a Redis primary found through a Sentinel set.

``DISPATCHER_REDIS_URL`` and ``DISPATCHER_BROKER_URL`` may name one::

    redis+sentinel://[[user]:password@]host:port[,host:port...]/master-name[/db]

The hosts are the sentinels (port 26379 when left out); the password, if any, is the
Redis primary's (and its replicas'), not the sentinels'. One URL names both the status
store and Celery's broker, so a submit still records and enqueues in one script.
dispatcher/connections.py builds redis-py clients from it; :func:`kombu_broker` gives
kombu's own form of the same set (``sentinel://h1:p1;sentinel://h2:p2`` with the master
name as a transport option). docs/deployment.md, "Redis Sentinel", tells what a failover
keeps and what it can lose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    """The sentinels to ask, the master name they watch, and how to log in to it."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a log line


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinel set ``url`` names; None for a URL of another scheme. ValueError (never
    naming the password) for a ``redis+sentinel://`` URL that is malformed."""
    if not is_sentinel_url(url):
        return None
    parts = urlsplit(url)
    username, password, hosts = login_and_hosts(parts.netloc)
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path or len(path) > 2:
        raise ValueError(
            f"{SENTINEL_SCHEME} URL must be {SENTINEL_SCHEME}://host:port[,host:port...]"
            "/master-name[/db]"
        )
    try:
        db = int(path[1]) if len(path) == 2 else 0
        sentinels = host_ports(hosts, SENTINEL_PORT)
    except ValueError:
        raise ValueError(f"{SENTINEL_SCHEME} URL: ports and the database must be numbers") from None
    return SentinelTarget(
        sentinels=sentinels,
        service=unquote(path[0]),
        db=db,
        username=username,
        password=password,
    )


def login_and_hosts(netloc: str) -> tuple[str | None, str | None, str]:
    """``user:password@h1:p1,h2:p2`` as (username, password, hosts), each part of the
    login unquoted, None where absent."""
    login, _, hosts = netloc.rpartition("@")
    username, _, password = login.partition(":")
    return unquote(username) or None, unquote(password) or None, hosts


def host_ports(hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """``h1:p1,[v6]:p2,h3`` as (host, port) pairs, ``default_port`` where none is given;
    ValueError for a port that is no number."""
    return tuple(_address(h, default_port) for h in hosts.split(",") if h)


def _address(host: str, default_port: int) -> tuple[str, int]:
    if host.startswith("["):  # [v6]:port
        name, _, rest = host[1:].partition("]")
        return name, int(rest.lstrip(":") or default_port)
    name, _, port = host.partition(":")
    return name, int(port or default_port)


def kombu_broker(url: str) -> tuple[str, dict[str, Any]]:
    """kombu's URL for a broker URL, and the transport options it needs besides (the
    master name for a Sentinel set; none for any other URL, which is kept as it is)."""
    target = sentinel_target(url)
    if target is None:
        return url, {}
    login = ""
    if target.password or target.username:
        login = f"{quote(target.username or '', safe='')}:{quote(target.password or '', safe='')}@"
    hosts = ";".join(
        f"sentinel://{login}{_host(host)}:{port}/{target.db}" for host, port in target.sentinels
    )
    return hosts, {"master_name": target.service}


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
