"""P7: messages accepted per second through ``handleBatchMessage`` (batches of 100) beside
single-message submits per second through the same API, in the same run.

The API is P4's (``dispatcher api --workers 2``, signed requests, the client's rate out
of the way); the load generator (:mod:`benchmarks.loadgen`) sends pre-signed requests.
Single submits go over 64 connections, as in P4; batches over 16 (each carries 100
messages, so 16 in flight already hold 1,600). The single-submit baseline brackets the
batch run, half before and half after, so drift in the machine's other load shows in
neither figure alone. Every batch message must be recorded: the status records are
counted after the run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks import harness
from benchmarks.http_bench import (
    API_WORKERS,
    CONNECTIONS,
    api_process,
    load,
    record_count,
    wait_http,
    wait_workers,
)

BATCH = 100
BATCH_CONNECTIONS = 16
GOAL = 5.0


def run(bench: Any, say: Callable[[str], None]) -> dict[str, Any]:
    singles = bench.n(4000, 20000)
    batches = bench.n(200, 600)
    bench.flush()
    api, url = api_process(bench)
    with harness.started(api):
        wait_workers(api, API_WORKERS)
        wait_http(f"{url}/healthz", api)
        say(f"P7 baseline: single submits, {CONNECTIONS} connections, n={singles // 2}")
        first = load(url, singles // 2)
        bench.flush()
        say(f"P7 ours: {batches} batches of {BATCH}, {BATCH_CONNECTIONS} connections")
        batched = load(url, batches, BATCH_CONNECTIONS, BATCH)
        recorded = record_count(bench)
        bench.flush()
        say(f"P7 baseline again: single submits, n={singles // 2}")
        second = load(url, singles // 2)
    value = round(batched["per_second"] * BATCH, 1)
    baseline = round((first["per_second"] + second["per_second"]) / 2, 1)
    r = round(value / baseline, 3) if baseline else None
    expected = (batched["warm_requests"] + batched["n"]) * BATCH
    every_answer_ok = all(
        run["statuses"].get("200", 0) == run["n"] for run in (first, batched, second)
    )
    return {
        "value": value,
        "baseline": baseline,
        "ratio": r,
        "goal": f"ratio >= {GOAL} (batch messages/s vs single submits/s), every answer 200, "
        "every batch message recorded",
        "met": (r or 0) >= GOAL and every_answer_ok and recorded == expected,
        "unit": f"messages accepted/s, uvicorn x{API_WORKERS}, batches of {BATCH}",
        "batch_requests_per_second": batched["per_second"],
        "batch_p50_ms": batched["p50_ms"],
        "batch_p99_ms": batched["p99_ms"],
        "batch_messages_recorded": recorded,
        "batch_messages_sent": expected,
        "single_p50_ms": max(first["p50_ms"], second["p50_ms"]),
        "ours": batched,
        "baseline_detail": [first, second],
    }
