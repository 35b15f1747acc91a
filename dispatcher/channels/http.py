"""HTTP for channels: one small connection pool per worker thread, and JSON bodies.

httpcore scans every pooled connection on each request, so with many threads
sharing one big client the CPU per request grows with the pool; several small
ones, one per thread, keep it flat (docs/architecture.md, "Costs").
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx


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


def json_or_none(response: httpx.Response) -> object:
    """The response's JSON body, or None when it has none."""
    try:
        return response.json()
    except ValueError:
        return None
