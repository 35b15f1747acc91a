"""The provider call's HTTP client: keep-alive, a closed pooled connection replaced before
anything is written on it, and urllib3's errors raised as httpx's."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from dispatcher.channels.http import ProviderHttp, json_or_none


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.client_address[1], body))
        answer = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Retry-After", "3")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        if self.server.close_after_answer:  # keep-alive announced, then dropped: stale
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    seen: list[tuple[int, bytes]]
    close_after_answer = False
    closed: threading.Semaphore
    """Released each time the server has closed a connection."""

    def shutdown_request(self, request: socket.socket) -> None:  # type: ignore[override]
        super().shutdown_request(request)
        self.closed.release()


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.seen = []
    httpd.closed = threading.Semaphore(0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url(httpd: Server) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/messages?useMsgId=true"


def client() -> ProviderHttp:
    return ProviderHttp(httpx.Timeout(2.0, connect=1.0), {"User-Agent": "dispatcher"})


def test_keeps_the_connection_alive_and_reads_the_answer(server: Server) -> None:
    http = client()
    replies = [http.post(url(server), b'{"n":%d}' % i, {"X-N": str(i)}) for i in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert json_or_none(replies[0]) == {"ok": True}
    assert replies[0].headers["retry-after"] == "3"  # case-insensitive
    assert [body for _, body in server.seen] == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert len({port for port, _ in server.seen}) == 1  # one connection, kept alive
    http.close()


def test_a_connection_the_server_closed_is_replaced_before_the_request(server: Server) -> None:
    server.close_after_answer = True
    http = client()
    for i in range(3):
        assert http.post(url(server), b"%d" % i, {}).status_code == 200
        # The connection is closed by now, its keep-alive notwithstanding (a close racing
        # the next request is the provider's to answer: the attempt reports it ambiguous).
        assert server.closed.acquire(timeout=5)
    # Every request reached the server exactly once, each on a fresh connection.
    assert [body for _, body in server.seen] == [b"0", b"1", b"2"]
    assert len({port for port, _ in server.seen}) == 3
    http.close()


def test_errors_are_httpx_errors() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        client().post(f"http://127.0.0.1:{port}/x", b"{}", {})

    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        http = ProviderHttp(httpx.Timeout(0.3, connect=1.0), {})
        with pytest.raises(httpx.ReadTimeout):
            http.post(f"http://127.0.0.1:{silent.getsockname()[1]}/x", b"{}", {})
