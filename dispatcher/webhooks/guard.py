"""Where webhooks may connect: the destination guard, applied to the connection itself.

A webhook URL's host is resolved once per new connection, every address it resolves to
is vetted, and the socket is opened to a vetted address, never to the name: nothing
resolves the name a second time between the check and the connect, so a DNS answer
that changes in between (DNS rebinding) cannot steer a request elsewhere. The request
still names the host (``Host`` header), and TLS still sends it as SNI and verifies the
certificate against it (httpcore does that from the URL's host, whatever address the
socket reached). docs/webhooks.md, "Destinations".
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore

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


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's blocking network backend, connecting only to vetted addresses.

    httpcore asks its backend for a TCP stream to the URL's host; this one resolves and
    vets the host itself and hands the parent a literal address, which
    ``socket.create_connection`` connects to without a lookup. TLS is started by
    httpcore afterwards with the URL's host as ``server_hostname``."""

    def __init__(self, *, allow_loopback: bool, resolver: Resolver = resolve) -> None:
        self.allow_loopback = allow_loopback
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = vetted_addresses(
            host, port, allow_loopback=self.allow_loopback, resolver=self.resolver
        )
        for index, address in enumerate(addresses):
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout):
                if index == len(addresses) - 1:
                    raise
        raise AssertionError("unreachable: vetted_addresses returns at least one")
