"""Serve the simulators with a real uvicorn: in a background thread (tests, ``dispatcher dev``)
or in the foreground (``dispatcher sandbox``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.sandbox.control import ConnectionDropped
from dispatcher.sandbox.skeleton import simulators

logger = logging.getLogger(__name__)

# A hung fault rule must not hold shutdown for its whole hang: cancel after this.
GRACEFUL_SHUTDOWN_SECONDS = 1


class _QuietFaults(logging.Filter):
    """Drop uvicorn's traceback for a connection a fault rule cut on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionDropped)


_quiet_faults = _QuietFaults()


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to its owner.

    uvicorn's own handlers are process-wide: with two servers in one loop the
    second would steal Ctrl-C from the first, so the owner sets ``should_exit``.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: Any) -> uvicorn.Config:
    uvicorn_error = logging.getLogger("uvicorn.error")
    if _quiet_faults not in uvicorn_error.filters:
        uvicorn_error.addFilter(_quiet_faults)
    # log_config=None: the host process owns logging; uvicorn only gets a level.
    return uvicorn.Config(
        app,
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


class PortInUse(OSError):
    """Another process already listens on the port a server was asked to take."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use")
        self.host = host
        self.port = port


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket; binding here makes port 0 and port clashes visible at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets that do, and
    # without it every keep-alive answer waits ~40 ms on the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    return sock


class ServerThread:
    """One ASGI app under uvicorn on ``host:port`` (0 = any free port), in its own thread.

    >>> with ServerThread(app) as server:
    ...     httpx.get(server.url + "/_sandbox/requests")
    """

    def __init__(
        self,
        app: Any,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> ServerThread:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("server already started")
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        server = self._server = _Server(_config(self.app))
        self._error = None
        self._thread = threading.Thread(
            target=self._run, args=(server, sock), name=f"sandbox:{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not server.started:
            if not self._thread.is_alive():
                self._thread = None
                raise RuntimeError(f"sandbox server on {self.url} failed to start") from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"sandbox server on {self.url} did not start in time")
            time.sleep(0.005)
        return self

    def _run(self, server: _Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # uvicorn exits with SystemExit on startup failure
            self._error = exc
            logger.exception("sandbox server on port %d stopped with an error", self.port)
        finally:
            sock.close()

    def stop(self) -> None:
        """Shut the server down and wait for its thread; idempotent."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(self.shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self.shutdown_timeout)
        self._thread = None

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def serve_sandbox(
    settings: Settings,
    *,
    easemob_port: int = 9101,
    qiniu_port: int = 9102,
    host: str = "127.0.0.1",
    ports: dict[str, int] | None = None,
) -> None:
    """Serve every simulator (:func:`simulators`) until SIGINT or SIGTERM; ``ports`` by
    simulator name overrides the default ports."""
    chosen = {"Easemob": easemob_port, "Qiniu": qiniu_port, **(ports or {})}
    apps: list[tuple[str, Any, int]] = []
    for sim in simulators():
        try:
            app = sim.from_settings(settings)
        except ConfigurationError as exc:
            if not sim.optional:
                raise
            logger.info("%s simulator not started: %s", sim.name, exc)
            continue
        apps.append((sim.name, app, chosen.get(sim.name, sim.default_port)))
    sockets: list[socket.socket] = []
    try:
        for _, _, port in apps:
            sockets.append(_bind(host, port))
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    servers = [_Server(_config(app)) for _, app, _ in apps]
    for (name, _, _), sock in zip(apps, sockets, strict=True):
        port = sock.getsockname()[1]
        logger.info("%s simulator on http://%s:%d", name, host, port)
    try:
        asyncio.run(_serve_until_signalled(servers, sockets))
    finally:
        for sock in sockets:
            sock.close()


async def _serve_until_signalled(servers: list[_Server], sockets: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()

    def request_exit(sig: signal.Signals) -> None:
        for server in servers:
            # A second Ctrl-C means "now", as in uvicorn; a repeated SIGTERM (a
            # supervisor signalling both us and our process group) does not.
            if sig == signal.SIGINT and server.should_exit:
                server.force_exit = True
            server.should_exit = True

    installed = _install_signal_handlers(loop, request_exit)

    async def serve(server: _Server, sock: socket.socket) -> None:
        try:
            await server.serve(sockets=[sock])
        finally:
            # One simulator gone means the sandbox is broken: stop the other too.
            for other in servers:
                other.should_exit = True

    try:
        await asyncio.gather(*(serve(s, sock) for s, sock in zip(servers, sockets, strict=True)))
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _install_signal_handlers(
    loop: asyncio.AbstractEventLoop, callback: Callable[[signal.Signals], None]
) -> list[signal.Signals]:
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            # Windows, or not the main thread: fall back where we can.
            with contextlib.suppress(ValueError):
                signal.signal(
                    sig, lambda num, _: loop.call_soon_threadsafe(callback, signal.Signals(num))
                )
    return installed
