"""P6: end-to-end delivery with a status webhook per message, beside the same run without.

Each delivered message sends ``message.delivered`` to one endpoint that answers after
20 ms (:mod:`benchmarks.webhook_endpoint`, verifying every signature). Goals: delivered
messages/s at least 0.85x the same run without webhooks (webhooks have their own queue
and never hold a delivery up), and the webhook backlog drained within 10 s of the last
delivery.

Runs without and with webhooks alternate (2 pairs with ``--quick``, else 3) and the
median ratio is the figure: on a machine shared with other work a single pair moves
with whatever else runs. Each pair also reports ``cpu_ratio``, the CPU per message of
every measured process without webhooks over with them (what throughput follows when
CPU is short, and far steadier under load), and the receiver's CPU per webhook.
"""

from __future__ import annotations

import base64
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks import harness
from dispatcher import keys
from dispatcher.embedded import free_port
from dispatcher.webhooks.outbox import WebhookStore

ENDPOINT_DELAY = 0.02
SECRET = "whsec_" + base64.b64encode(b"benchmark-webhook-secret-32bytes").decode()
CLIENT = "bench"
GOAL_RATIO = 0.85
GOAL_DRAIN_SECONDS = 10.0


def start_endpoint() -> tuple[harness.Process, str]:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.webhook_endpoint",
        str(port),
        SECRET,
        str(ENDPOINT_DELAY),
    ]
    process = harness.Process("webhook-endpoint", command, {}).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return process, url
        time.sleep(0.05)
    raise TimeoutError("webhook endpoint did not start")


def cpu_per_message(result: dict[str, Any]) -> float:
    """Milliseconds of CPU per message of every process measured (workers, producer,
    Redis, simulator): on a machine that is short of CPU, throughput follows it."""
    return float(sum(v for k, v in result.items() if k.endswith("_cpu_ms_per_message")))


def run(bench: Any, say: Callable[[str], None], sim: harness.Simulator) -> dict[str, Any]:
    """Runs without and with webhooks alternate, ``pairs`` times: a machine shared with
    other work moves both of a pair alike, and the median of the pairs' ratios is kept."""
    n = bench.n(1000, 4000)
    pairs = bench.n(2, 3)
    endpoint, url = start_endpoint()
    rounds: list[dict[str, Any]] = []
    try:
        clients = {
            CLIENT: {
                "secret": "bench-client-secret",
                "webhooks": [{"url": f"{url}/webhooks/bench", "secret": SECRET}],
            }
        }
        for pair in range(1, pairs + 1):
            sim.reset()
            say(f"P6 pair {pair}/{pairs} baseline: no webhooks, {bench.pool} "
                f"-c {bench.concurrency} x{bench.processes}, n={n}")  # fmt: skip
            plain = bench.run_ours(
                sim,
                bench.dispatcher_env(sim, f"p6-{uuid.uuid4().hex[:6]}"),
                n,
                pool=bench.pool,
                concurrency=bench.concurrency,
                processes=bench.processes,
                client=CLIENT,
            )
            hooks_env = bench.dispatcher_env(
                sim,
                f"p6-{uuid.uuid4().hex[:6]}",
                DISPATCHER_CLIENTS=json.dumps(clients),
                DISPATCHER_WEBHOOK_QUEUE=f"p6-hooks-{uuid.uuid4().hex[:6]}",
                DISPATCHER_WEBHOOK_ALLOW_LOOPBACK="true",
            )
            drain: dict[str, Any] = {}

            def wait_for_drain(drain: dict[str, Any] = drain) -> None:
                last_delivery = time.monotonic()
                drained = harness.wait_until(
                    lambda: (
                        WebhookStore(bench.redis).backlog()["outbox"] == 0
                        and bench.redis.zcard(keys.WEBHOOK_DUE) == 0
                    ),
                    120,
                )
                drain["seconds"] = round(drained - last_delivery, 3)

            sim.reset()
            say(f"P6 pair {pair}/{pairs} ours: one webhook per message, endpoint answering "
                f"in {ENDPOINT_DELAY * 1000:.0f} ms")  # fmt: skip
            receiver_cpu = harness.cpu_seconds(endpoint.pid)
            ours = bench.run_ours(
                sim,
                hooks_env,
                n,
                pool=bench.pool,
                concurrency=bench.concurrency,
                processes=bench.processes,
                client=CLIENT,
                after_timed=wait_for_drain,
            )
            receiver_ms = 1000 * (harness.cpu_seconds(endpoint.pid) - receiver_cpu) / n
            received = httpx.get(url, timeout=30).json()
            rounds.append(
                {
                    "ratio": ratio(ours, plain),
                    "cpu_ratio": round(cpu_per_message(plain) / cpu_per_message(ours), 3),
                    "drain_seconds": drain.get("seconds"),
                    "receiver_cpu_ms_per_webhook": round(receiver_ms, 3),
                    "webhooks_unique_so_far": received["unique"],
                    "webhook_dead": int(bench.redis.zcard(keys.WEBHOOK_DEAD)),
                    "ours": ours,
                    "without_webhooks": plain,
                }
            )
    finally:
        endpoint.stop()
    ratios = [r["ratio"] for r in rounds if r["ratio"] is not None]
    r = round(statistics.median(ratios), 3) if len(ratios) == len(rounds) else None
    median = sorted(rounds, key=lambda x: x["ratio"] or 0)[len(rounds) // 2]
    drains = [r["drain_seconds"] for r in rounds]
    drained = None if None in drains else max(drains)
    return {
        "value": median["ours"]["per_second"],
        "baseline": median["without_webhooks"]["per_second"],
        "ratio": r,
        "ratios": ratios,
        "cpu_ratios": [x["cpu_ratio"] for x in rounds],
        "goal": f"ratio >= {GOAL_RATIO} and the webhook backlog drained within "
        f"{GOAL_DRAIN_SECONDS:g} s of the last delivery",
        "met": (r or 0) >= GOAL_RATIO and drained is not None and drained <= GOAL_DRAIN_SECONDS,
        "unit": "messages/s end to end (submit -> delivered), one webhook each vs none; "
        f"the median of {len(rounds)} alternating pairs",
        "drain_seconds": drained,
        "webhooks_verified": received["verified"],
        "webhooks_unique": received["unique"],
        "webhooks_rejected": received["rejected"],
        "webhook_dead": sum(x["webhook_dead"] for x in rounds),
        "endpoint_delay_ms": ENDPOINT_DELAY * 1000,
        "pairs": rounds,
    }


def ratio(ours: dict[str, Any], plain: dict[str, Any]) -> float | None:
    if not ours.get("per_second") or not plain.get("per_second"):
        return None
    return round(float(ours["per_second"]) / float(plain["per_second"]), 3)
