"""P12: how long a lone message takes from submit to delivered, at a light 10 messages/s.

The workers are set up as for P1 and warmed up; then messages are submitted on a
fixed schedule of 10 per second and each one's latency is read from its status
record (``deliveredAt - createdAt``, both on Redis's clock). A change that makes
the worker cheaper under load (several messages per task) must not make a lone
message slower: compare p50 and p99 with the previous version in the same run
(A/B on a loaded machine), there is no in-run baseline.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks import harness
from dispatcher import keys
from dispatcher.connections import text
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef

RATE = 10.0
TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hello"}}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(bench: Any, say: Callable[[str], None], sim: harness.Simulator) -> dict[str, Any]:
    n = bench.n(100, 600)
    sim.reset()
    bench.flush()
    env = bench.dispatcher_env(sim, f"p12-{uuid.uuid4().hex[:6]}")
    dispatcher = bench.producer(env)
    warm = bench.processes * bench.concurrency
    say(
        f"P12: {n} messages at {RATE:.0f}/s, {bench.pool} -c {bench.concurrency} x{bench.processes}"
    )
    for _ in range(warm):
        dispatcher.submit(TEXT)
    workers = bench.our_workers(env, bench.processes, bench.pool, bench.concurrency)
    ids: list[str] = []
    with harness.started(*workers):
        harness.wait_until(lambda: bench.delivered() >= warm, 60)
        start = time.monotonic()
        for i in range(n):
            pause = start + i / RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            ids.append(dispatcher.submit(TEXT))
        harness.wait_until(lambda: bench.delivered() >= warm + n, 60)
    dispatcher.close()
    pipe = bench.redis.pipeline(transaction=False)
    for message_id in ids:
        pipe.hmget(
            keys.message(MessageRef(DEFAULT_NAMESPACE, message_id)), "createdAt", "deliveredAt"
        )
    latencies = [
        float(int(text(delivered)) - int(text(created)))
        for created, delivered in pipe.execute()
        if created is not None and delivered is not None
    ]
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "value": p50,
        "p99_ms": p99,
        "mean_ms": round(statistics.fmean(latencies), 2),
        "max_ms": max(latencies),
        "baseline": None,
        "ratio": None,
        "goal": "p50 and p99 no worse than the previous version in the same run (A/B)",
        "met": None,
        "unit": "ms submit -> delivered (p50; Redis's clock), one message at a time at 10/s",
        "n": n,
        "delivered": len(latencies),
        "pool": bench.pool,
        "concurrency": bench.concurrency,
        "worker_processes": bench.processes,
    }
