"""P4: submits/s through the HTTP API beside a bare ``apply_async`` loop and a bare FastAPI.

The API runs as production does (``dispatcher api --workers 2``: uvicorn, no
access log, signatures checked, the replay guard and the client's rate limit
in Redis, status record + Celery publish per submit); the load generator
(:mod:`benchmarks.loadgen`) is a process of its own with 64 keep-alive
connections and pre-signed requests.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks import harness, loadgen
from benchmarks.baseline_app import noop
from dispatcher import keys
from dispatcher.embedded import free_port

CONNECTIONS = 64
API_WORKERS = 2


def wait_http(url: str, process: harness.Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code < 500:
                return
        if process.process is not None and process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s:\n{process.log()[-3000:]}")


def wait_workers(process: harness.Process, count: int, timeout: float = 90) -> None:
    """Until every uvicorn worker process has finished its startup (not only the first)."""
    deadline = time.monotonic() + timeout
    while process.log().count("Application startup complete") < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.name}: workers not ready:\n{process.log()[-3000:]}")
        if process.process is not None and process.process.poll() is not None:
            raise RuntimeError(f"{process.name} exited:\n{process.log()[-3000:]}")
        time.sleep(0.1)


def load(url: str, n: int, connections: int = CONNECTIONS, batch: int = 0) -> dict[str, Any]:
    """``n`` signed requests over ``connections``; with ``batch``, batch submits of that many."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.loadgen", url, str(n), str(connections), str(batch)],
        env=harness.child_env({}),
        cwd=harness.ROOT,
        capture_output=True,
        timeout=300,
        check=True,
    )
    return dict(json.loads(out.stdout.decode().strip().splitlines()[-1]))


def apply_async_loop(redis_url: str, n: int) -> dict[str, Any]:
    """A bare Celery producer: ``apply_async`` of a no-op task, one thread, nobody consuming."""
    noop.app.conf.broker_url = redis_url
    queue = f"enqueue-{uuid.uuid4().hex[:6]}"
    noop.apply_async(("warm",), queue=queue)
    cpu = time.process_time()
    started = time.perf_counter()
    for i in range(n):
        noop.apply_async((f"bench{i}",), queue=queue)
    elapsed = time.perf_counter() - started
    return {
        "per_second": round(n / elapsed, 1),
        "n": n,
        "seconds": round(elapsed, 3),
        "cpu_ms_per_enqueue": round(1000 * (time.process_time() - cpu) / n, 3),
    }


def api_process(bench: Any, **env: str) -> tuple[harness.Process, str]:
    """``dispatcher api --workers 2`` on the bench's Redis with the load generator's client
    (rate limit out of the way), and its URL; ``env``: more ``DISPATCHER_*``."""
    port = free_port()
    settings = {
        "DISPATCHER_REDIS_URL": bench.redis_url,
        "DISPATCHER_QUEUE": f"api-{uuid.uuid4().hex[:6]}",
        "DISPATCHER_CLIENTS": json.dumps(
            {loadgen.CLIENT: {"secret": loadgen.SECRET, "channels": [loadgen.CHANNEL]}}
        ),
        "DISPATCHER_SUBMIT_RATE_PER_SECOND": "1000000",
        "DISPATCHER_SUBMIT_BURST": "1000000",
        "DISPATCHER_LOG_LEVEL": "INFO",
        **env,
    }
    api = harness.Process(
        "api",
        [
            *(sys.executable, "-m", "dispatcher.cli", "api"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(API_WORKERS)),
        ],
        settings,
    )
    return api, f"http://127.0.0.1:{port}"


def record_count(bench: Any) -> int:
    return sum(1 for _ in bench.redis.scan_iter(match=keys.ALL_RECORDS, count=1000))


def run(bench: Any, say: Callable[[str], None]) -> dict[str, Any]:
    n = bench.n(4000, 20000)
    bench.flush()
    say(f"P4 baseline: bare apply_async loop, n={n}")
    enqueue = apply_async_loop(bench.redis_url, n)

    bench.flush()
    api, url = api_process(bench)
    say(f"P4 ours: dispatcher api --workers {API_WORKERS}, {CONNECTIONS} connections, n={n}")
    with harness.started(api):
        wait_workers(api, API_WORKERS)
        wait_http(f"{url}/healthz", api)
        spy = harness.py_spy(api.pid, "api", subprocesses=True)
        ours = load(url, n)
        harness.stop_py_spy(spy)
        accepted = record_count(bench)
    ours["status_records"] = accepted

    port = free_port()
    bare_url = f"http://127.0.0.1:{port}"
    bare_api = harness.Process(
        "bare-api",
        [
            *(sys.executable, "-m", "uvicorn", "benchmarks.bare_api:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(API_WORKERS)),
            *("--no-access-log", "--log-level", "info"),
        ],
        {},
    )
    say(f"P4 baseline: bare FastAPI endpoint, same validation, n={n}")
    with harness.started(bare_api):
        wait_workers(bare_api, API_WORKERS)
        wait_http(f"{bare_url}/docs", bare_api)
        bare = load(bare_url, n)

    value, baseline = ours["per_second"], enqueue["per_second"]
    r = round(value / baseline, 3) if baseline else None
    ok = ours["statuses"].get("200", 0) == ours["n"]
    return {
        "value": value,
        "baseline": baseline,
        "ratio": r,
        "goal": "ratio >= 0.8 (API submits/s vs a bare apply_async loop), every answer 200",
        "met": (r or 0) >= 0.8 and ok,
        "unit": f"submits/s, uvicorn x{API_WORKERS}, {CONNECTIONS} connections, signed requests",
        "p50_ms": ours["p50_ms"],
        "p99_ms": ours["p99_ms"],
        "bare_fastapi": bare["per_second"],
        "ratio_vs_bare_fastapi": round(value / bare["per_second"], 3)
        if bare["per_second"]
        else None,
        "ours": ours,
        "bare_apply_async": enqueue,
        "bare_fastapi_detail": bare,
    }
