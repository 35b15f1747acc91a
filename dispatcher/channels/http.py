"""HTTP for channels: one small connection pool per worker thread, and JSON bodies.

:class:`ProviderHttp` is the provider call on the delivery path: urllib3's pool,
the cheapest of the pooled clients measured (``benchmarks/http_clients.py``),
with TLS, keep-alive and a connection found closed replaced before anything is
written on it; its errors are httpx's, so the channels map them in one place.
:class:`PerThreadHttp` is httpx's, for calls off that path. httpcore scans every
pooled connection on each request, so with many threads sharing one big client
the CPU per request grows with the pool; several small ones, one per thread,
keep it flat (docs/architecture.md, "Costs").
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)


def encode_body(body: dict[str, Any]) -> bytes:
    """UTF-8 JSON, not ASCII-escaped: valid Unicode reaches the provider byte for byte
    (WeChat shows ``\\uXXXX`` escapes literally and some of its APIs refuse them)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


class PerThreadHttp:
    """An ``httpx.Client`` and a bare transport per thread, all closed together."""

    def __init__(self, timeout: httpx.Timeout, headers: dict[str, str]) -> None:
        self.timeout = timeout
        self.headers = headers
        self._local = threading.local()
        self._opened: list[httpx.Client | httpx.HTTPTransport] = []
        self._lock = threading.Lock()
        # One TLS context for every per-thread pool: building one loads the CA
        # bundle (tens of ms of CPU), which 32 threads paid 32 times over.
        self._tls = httpx.create_ssl_context()

    @property
    def client(self) -> httpx.Client:
        """This thread's client (for calls off the hot path), on this thread's connections."""
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(
                timeout=self.timeout, headers=self.headers, transport=self.transport
            )
            self._local.client = client
            self._keep(client)
        return client

    @property
    def transport(self) -> httpx.HTTPTransport:
        """This thread's small connection pool."""
        transport: httpx.HTTPTransport | None = getattr(self._local, "transport", None)
        if transport is None:
            transport = httpx.HTTPTransport(
                verify=self._tls,
                limits=httpx.Limits(max_connections=4, max_keepalive_connections=4),
            )
            self._local.transport = transport
            self._keep(transport)
        return transport

    def post(self, url: httpx.URL, content: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST straight to this thread's transport; raises httpx.HTTPError.

        httpx.Client's per-request layers (URL merging, auth, redirects, cookies) cost
        as much CPU as the exchange itself; the transport still maps errors to httpx's.
        """
        request = httpx.Request(
            "POST",
            url,
            content=content,
            headers={**self.headers, **headers},
            extensions={"timeout": self.timeout.as_dict()},
        )
        response = self.transport.handle_request(request)
        response.request = request
        try:
            response.read()
        finally:
            response.close()
        return response

    def close(self) -> None:
        with self._lock:
            for opened in self._opened:
                opened.close()
            self._opened.clear()

    def _keep(self, opened: httpx.Client | httpx.HTTPTransport) -> None:
        with self._lock:
            self._opened.append(opened)


class HasJson(Protocol):
    def json(self) -> Any: ...


def json_or_none(response: HasJson) -> object:
    """The response's JSON body, or None when it has none."""
    try:
        return response.json()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Reply:
    """A provider's answer, read in full."""

    status_code: int
    headers: Mapping[str, str]
    """Case-insensitive."""
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


_CONNECT_RETRY = urllib3.Retry(
    total=1, connect=1, read=0, redirect=False, status=0, other=0, raise_on_status=False
)
"""A connection that could not be made is tried once more (nothing was written on it);
a request that may have been written is never sent again here: the attempt reports it
(ambiguous) and the retry policy decides."""


class ThreadPools:
    """A small urllib3 ``PoolManager`` per thread (up to 4 hosts, 4 kept connections
    each), all on one TLS context, all closed together. ``pool_classes`` replaces
    urllib3's pool class per scheme (the webhooks' guarded connections)."""

    def __init__(
        self,
        *,
        timeout: urllib3.Timeout,
        retries: urllib3.Retry | bool,
        tls: ssl.SSLContext | None = None,
        pool_classes: Mapping[str, Any] | None = None,
    ) -> None:
        self._timeout = timeout
        self._retries = retries
        self._pool_classes = pool_classes
        # One TLS context for every per-thread pool (loading the CA bundle costs tens of ms).
        self._tls: ssl.SSLContext = tls or httpx.create_ssl_context()
        self._local = threading.local()
        self._opened: list[urllib3.PoolManager] = []
        self._lock = threading.Lock()

    def get(self) -> urllib3.PoolManager:
        """This thread's pools."""
        pools: urllib3.PoolManager | None = getattr(self._local, "pools", None)
        if pools is None:
            pools = urllib3.PoolManager(
                num_pools=4,
                maxsize=4,
                ssl_context=self._tls,
                timeout=self._timeout,
                retries=self._retries,
            )
            if self._pool_classes is not None:
                pools.pool_classes_by_scheme = dict(self._pool_classes)
            self._local.pools = pools
            with self._lock:
                self._opened.append(pools)
        return pools

    def close(self) -> None:
        with self._lock:
            for pools in self._opened:
                pools.clear()
            self._opened.clear()


class ProviderHttp:
    """Provider calls on the delivery path: a small urllib3 pool per thread and host.

    A pooled connection the server has closed meanwhile is noticed before the request
    and replaced; errors are raised as httpx's (``httpx.ConnectError``,
    ``httpx.ConnectTimeout``, ``httpx.ReadTimeout``, ``httpx.RemoteProtocolError``, ...).
    """

    def __init__(self, timeout: httpx.Timeout, headers: dict[str, str]) -> None:
        self.headers = headers
        self._pools = ThreadPools(
            timeout=urllib3.Timeout(connect=timeout.connect, read=timeout.read),
            retries=_CONNECT_RETRY,
        )

    def post(self, url: str, content: bytes, headers: dict[str, str]) -> Reply:
        """POST ``content`` to ``url`` and read the whole answer; raises httpx.HTTPError."""
        try:
            raw = self._pools.get().urlopen(
                "POST",
                url,
                body=content,
                headers={**self.headers, **headers},
                redirect=False,
                preload_content=True,
            )
        except urllib3.exceptions.HTTPError as exc:
            raise _as_httpx(exc) from None
        return Reply(raw.status, raw.headers, raw.data)

    def close(self) -> None:
        self._pools.close()


def _as_httpx(exc: urllib3.exceptions.HTTPError) -> httpx.HTTPError:
    """urllib3's error as the httpx error of the same meaning (the message kept)."""
    if isinstance(exc, MaxRetryError) and isinstance(exc.reason, Exception):
        reason: Exception = exc.reason
    else:
        reason = exc
    kind: type[httpx.HTTPError]
    if isinstance(reason, NewConnectionError):  # a subclass of ConnectTimeoutError
        kind = httpx.ConnectError
    elif isinstance(reason, ConnectTimeoutError):
        kind = httpx.ConnectTimeout
    elif isinstance(reason, ReadTimeoutError):
        kind = httpx.ReadTimeout
    elif isinstance(reason, ProtocolError):
        kind = httpx.RemoteProtocolError
    else:  # TLS failures included: the request may have been written
        kind = httpx.TransportError
    return kind(str(reason))
