"""A TCP proxy in front of Redis that loses one reply on demand.

``proxy.lose_next_reply(b"EVALSHA")`` arms it: the next command containing that word
reaches Redis (which runs it), but its reply never reaches the client, whose connection
is cut instead, as a network fault after the server acted would. redis-py then retries
the command on a new connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self
from urllib.parse import urlsplit, urlunsplit


class ReplyLosingProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        self._lock = threading.Lock()
        self._armed: bytes | None = None
        self.lost = 0
        self._sockets: list[socket.socket] = []

    def lose_next_reply(self, command_word: bytes) -> None:
        with self._lock:
            self._armed = command_word

    def start(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._upstream)
            self._sockets += [client, server]
            doomed = threading.Event()
            threading.Thread(
                target=self._requests, args=(client, server, doomed), daemon=True
            ).start()
            threading.Thread(
                target=self._replies, args=(server, client, doomed), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, doomed: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    if self._armed is not None and self._armed in data:
                        self._armed = None
                        doomed.set()
                server.sendall(data)

    def _replies(
        self, server: socket.socket, client: socket.socket, doomed: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if doomed.is_set():
                    self.lost += 1
                    break
                client.sendall(data)
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
