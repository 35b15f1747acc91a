"""Where webhooks may connect: the destination guard, applied to the connection itself.

A webhook URL's host is resolved once per new connection, every address it resolves to
is vetted, and the socket is opened to a vetted address, never to the name: nothing
resolves the name a second time between the check and the connect, so a DNS answer
that changes in between (DNS rebinding) cannot steer a request elsewhere. The request
still names the host (``Host`` header), and TLS still sends it as SNI and verifies the
certificate against it (urllib3 does that from the connection's host, whatever address
the socket reached). docs/webhooks.md, "Destinations".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "100.100.100.200", "fd00:ec2::254", "169.254.170.2")
)
"""Cloud instance-metadata services (AWS, Alibaba Cloud, AWS IPv6, ECS task metadata)."""


class RefusedDestination(Exception):
    """The URL resolves to an address webhooks must not reach."""


def resolve(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host`` (TCP), in its order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedDestination(f"cannot resolve {host}: {exc}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def vetted_addresses(
    host: str, port: int, *, allow_loopback: bool, resolver: Resolver = resolve
) -> list[str]:
    """The addresses to connect to for ``host``: all it resolves to, once, each checked.
    Refused when any of them is loopback (unless allowed), private, link-local, metadata
    or otherwise not public: a name that resolves anywhere forbidden is not used at all."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        addresses = resolver(host, port)
    else:
        addresses = [host]  # a literal needs no resolver
    if not addresses:
        raise RefusedDestination(f"{host} resolves to no address")
    for text in addresses:
        _check(host, ipaddress.ip_address(text.partition("%")[0]), allow_loopback)
    return addresses


def _check(host: str, address: IPAddress, allow_loopback: bool) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address.is_loopback:
        if not allow_loopback:
            raise RefusedDestination(
                f"{host} resolves to loopback {address} "
                "(allowed only with DISPATCHER_WEBHOOK_ALLOW_LOOPBACK=true)"
            )
        return
    if address in METADATA_ADDRESSES or not address.is_global:
        raise RefusedDestination(f"{host} resolves to non-public address {address}")


def check_destination(url: str, *, allow_loopback: bool, resolver: Resolver = resolve) -> None:
    """Refuse a URL that is not http(s) or whose host resolves anywhere forbidden."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("http", "https") or not host:
        raise RefusedDestination("not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    vetted_addresses(host, port, allow_loopback=allow_loopback, resolver=resolver)


@dataclass(frozen=True, slots=True)
class Guard:
    """Where webhook connections may go, and how names are resolved."""

    allow_loopback: bool
    resolver: Resolver = resolve

    def connect(self, host: str, port: int, timeout: float | None, options: Any) -> socket.socket:
        """A socket to a vetted address of ``host`` (each in turn until one answers);
        raises RefusedDestination, or the last address's OSError."""
        addresses = vetted_addresses(
            host, port, allow_loopback=self.allow_loopback, resolver=self.resolver
        )
        for index, address in enumerate(addresses):
            try:
                sock = socket.create_connection((address, port), timeout)
            except OSError:
                if index == len(addresses) - 1:
                    raise
                continue
            for option in options or ():
                sock.setsockopt(*option)
            return sock
        raise AssertionError("unreachable: vetted_addresses returns at least one")


class GuardedHTTPConnection(HTTPConnection):
    """urllib3's connection, its socket opened by :meth:`Guard.connect`; everything
    after the socket (``Host`` header, TLS with SNI and the certificate check) still
    uses the connection's host, the URL's name."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def _new_conn(self) -> socket.socket:
        try:
            return self.guard.connect(self.host, self.port, self.timeout, self.socket_options)
        except TimeoutError as exc:
            message = f"Connection to {self.host} timed out. (connect timeout={self.timeout})"
            raise ConnectTimeoutError(self, message) from exc
        except OSError as exc:
            message = f"Failed to establish a new connection: {exc}"
            raise NewConnectionError(self, message) from exc


class GuardedHTTPSConnection(GuardedHTTPConnection, HTTPSConnection):
    pass


class GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


def guarded_pool_classes(guard: Guard) -> dict[str, Callable[..., HTTPConnectionPool]]:
    """urllib3 pool classes per scheme whose connections go through ``guard``: for
    ``PoolManager.pool_classes_by_scheme``."""

    def http(host: str, port: int | None, **kwargs: Any) -> HTTPConnectionPool:
        return GuardedHTTPPool(host, port, guard=guard, **kwargs)

    def https(host: str, port: int | None, **kwargs: Any) -> HTTPConnectionPool:
        return GuardedHTTPSPool(host, port, guard=guard, **kwargs)

    return {"http": http, "https": https}
