"""The pieces a benchmark starts and stops: Redis, the simulators, worker and API processes.

Everything but Redis runs as a separate Python process, so the benchmark's
own process (producer, load generator) never shares a GIL with what it
measures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from dispatcher.embedded import RedisServer, die_with_parent, free_port

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = Path(tempfile.mkdtemp(prefix="dispatcher-bench-"))

EASEMOB_ORG = "bench-org"
EASEMOB_APP = "bench"
EASEMOB_CLIENT_ID = "bench-client-id"
EASEMOB_CLIENT_SECRET = "bench-client-secret"
UNLIMITED = 10_000_000


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Process:
    """A child process with its output in a log file; killed with the benchmark."""

    name: str
    command: list[str]
    env: dict[str, str]
    ready_text: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = LOG_DIR / f"{self.name}-{uuid.uuid4().hex[:6]}.log"

    def start(self, timeout: float = 60.0) -> Process:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command,
            env=child_env(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )
        if self.ready_text:
            self.wait_for(self.ready_text, timeout)
        return self

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited at start ({self.log_path}):\n{self.log()[-3000:]}"
                )
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready in {timeout}s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its children (prefork pools), from /proc."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (and its reaped children) so far."""
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(v) for v in fields[11:15])
        return ticks / os.sysconf("SC_CLK_TCK")
    return 0.0


# ---------------------------------------------------------------------------


class Simulator:
    """The Easemob simulator (:mod:`benchmarks.simulator`) in a process of its own."""

    def __init__(
        self, *, calls_per_second: int = UNLIMITED, messages_per_minute: int | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.calls_per_second = calls_per_second
        self.messages_per_minute = messages_per_minute
        self.proc = Process(
            "sandbox",
            [sys.executable, "-m", "benchmarks.simulator", str(self.port)],
            {
                **easemob_env(self.url, calls_per_second, messages_per_minute),
                "DISPATCHER_LOG_LEVEL": "WARNING",
            },
        )
        self.http = httpx.Client(timeout=30)

    def start(self) -> Simulator:
        self.proc.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get(f"{self.url}/_sandbox/faults").status_code == 200:
                    return self
            if self.proc.process is not None and self.proc.process.poll() is not None:
                raise RuntimeError(f"simulator exited:\n{self.proc.log()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError("simulator did not start")

    def reset(self, latency: float = 0.0) -> None:
        self.http.delete(f"{self.url}/_sandbox/requests").raise_for_status()
        self.http.delete(f"{self.url}/_sandbox/faults").raise_for_status()
        if latency:
            self.http.post(
                f"{self.url}/_sandbox/faults",
                json={"path": "/messages$", "method": "POST", "latency": latency},
            ).raise_for_status()

    def token(self) -> str:
        response = self.http.post(
            f"{self.url}/{EASEMOB_ORG}/{EASEMOB_APP}/token",
            json={
                "grant_type": "client_credentials",
                "client_id": EASEMOB_CLIENT_ID,
                "client_secret": EASEMOB_CLIENT_SECRET,
            },
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def stats(self) -> dict[str, int]:
        response = self.http.get(f"{self.url}/_sandbox/easemob/stats")
        response.raise_for_status()
        return dict(response.json())

    def requests(self) -> list[dict[str, Any]]:
        response = self.http.get(f"{self.url}/_sandbox/requests")
        response.raise_for_status()
        return list(response.json())

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()

    @property
    def messages_url(self) -> str:
        return f"{self.url}/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


def easemob_env(
    url: str, calls_per_second: int, messages_per_minute: int | None = None
) -> dict[str, str]:
    if messages_per_minute is None:
        messages_per_minute = UNLIMITED if calls_per_second >= UNLIMITED else 6000
    return {
        "DISPATCHER_EASEMOB_BASE_URL": url,
        "DISPATCHER_EASEMOB_ORG": EASEMOB_ORG,
        "DISPATCHER_EASEMOB_APP": EASEMOB_APP,
        "DISPATCHER_EASEMOB_CLIENT_ID": EASEMOB_CLIENT_ID,
        "DISPATCHER_EASEMOB_CLIENT_SECRET": EASEMOB_CLIENT_SECRET,
        "DISPATCHER_EASEMOB_CALLS_PER_SECOND": str(calls_per_second),
        "DISPATCHER_EASEMOB_MESSAGES_PER_MINUTE": str(messages_per_minute),
    }


def celery_worker(
    name: str,
    app: str,
    queue: str,
    env: dict[str, str],
    *,
    pool: str | None,
    concurrency: int | None,
    loglevel: str = "INFO",
) -> Process:
    command = [
        sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue,
        "-n", f"{name}-{uuid.uuid4().hex[:6]}@%h",
        "--without-heartbeat", "--without-mingle", "--without-gossip", "-l", loglevel,
    ]  # fmt: skip
    if pool:
        command += ["-P", pool]
    if concurrency:
        command += ["-c", str(concurrency)]
    return Process(name, command, env, ready_text=" ready.")


@contextlib.contextmanager
def started(*processes: Process) -> Iterator[list[Process]]:
    """Start processes in parallel (workers take ~1-2 s to import), stop them all after."""
    running: list[Process] = []
    try:
        for process in processes:
            ready, process.ready_text = process.ready_text, None
            process.start()
            process.ready_text = ready
            running.append(process)
        for process in running:
            if process.ready_text:
                process.wait_for(process.ready_text, 60)
        yield running
    finally:
        for process in running:
            process.stop()


def start_redis() -> tuple[RedisServer, redis.Redis]:
    server = RedisServer(appendonly=False).start()
    return server, redis.Redis.from_url(server.url)


def broker_backlog(client: redis.Redis, queue: str) -> int:
    """Tasks waiting in the queue plus those fetched but not yet acknowledged."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(queue)
    pipe.hlen("unacked")
    waiting, unacked = pipe.execute()
    return int(waiting) + int(unacked)


def broker_idle(client: redis.Redis, queue: str) -> bool:
    """Nothing left in the queue and nothing fetched but unacknowledged (acks_late)."""
    pipe = client.pipeline(transaction=False)
    pipe.llen(queue)
    pipe.hlen("unacked")
    waiting, unacked = pipe.execute()
    return waiting == 0 and unacked == 0


def wait_until(predicate: Any, timeout: float, interval: float = 0.02) -> float:
    """Poll until ``predicate()``; returns the monotonic time it first held. Raises on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met in {timeout}s")
        time.sleep(interval)


def py_spy(pid: int, label: str, *, subprocesses: bool = False) -> subprocess.Popen[bytes] | None:
    """With ``BENCH_PYSPY=<dir>``, sample ``pid`` (collapsed stacks) until stop_py_spy."""
    out_dir = os.environ.get("BENCH_PYSPY")
    if not out_dir:
        return None
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    target = Path(out_dir) / f"{label}-{pid}.raw"
    return subprocess.Popen(
        ["py-spy", "record", "-p", str(pid), "-r", "250", "--format", "raw",
         "-o", str(target), "--nonblocking", "--gil", "-d", "600",
         *(["--subprocesses"] if subprocesses else [])],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(20)
    except subprocess.TimeoutExpired:
        spy.kill()
