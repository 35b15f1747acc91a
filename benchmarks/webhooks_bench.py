"""P6: end-to-end delivery with a status webhook per message, beside the same run without.

Each delivered message sends ``message.delivered`` to one endpoint that answers after
20 ms (:mod:`benchmarks.webhook_endpoint`, verifying every signature). Goals: delivered
messages/s at least 0.85x the same run without webhooks (webhooks have their own queue
and never hold a delivery up), and the webhook backlog drained within 10 s of the last
delivery.
"""

from __future__ import annotations

import base64
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from benchmarks import harness
from dispatcher import keys
from dispatcher.embedded import free_port

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


def run(bench: Any, say: Callable[[str], None], sim: harness.Simulator) -> dict[str, Any]:
    n = bench.n(1000, 4000)
    endpoint, url = start_endpoint()
    try:
        sim.reset()
        say(
            f"P6 baseline: no webhooks, {bench.pool} -c {bench.concurrency} x{bench.processes}, n={n}"
        )
        plain = bench.run_ours(
            sim,
            bench.dispatcher_env(sim, f"p6-{uuid.uuid4().hex[:6]}"),
            n,
            pool=bench.pool,
            concurrency=bench.concurrency,
            processes=bench.processes,
            client=CLIENT,
        )
        clients = {
            CLIENT: {
                "secret": "bench-client-secret",
                "webhooks": [{"url": f"{url}/webhooks/bench", "secret": SECRET}],
            }
        }
        hooks_env = bench.dispatcher_env(
            sim,
            f"p6-{uuid.uuid4().hex[:6]}",
            DISPATCHER_CLIENTS=json.dumps(clients),
            DISPATCHER_WEBHOOK_QUEUE=f"p6-hooks-{uuid.uuid4().hex[:6]}",
            DISPATCHER_WEBHOOK_ALLOW_LOOPBACK="true",
        )
        drain: dict[str, Any] = {}

        def wait_for_drain() -> None:
            last_delivery = time.monotonic()
            drained = harness.wait_until(
                lambda: (
                    bench.redis.llen(keys.WEBHOOK_OUTBOX) == 0
                    and bench.redis.zcard(keys.WEBHOOK_DUE) == 0
                ),
                120,
            )
            drain["seconds"] = round(drained - last_delivery, 3)

        sim.reset()
        say(
            f"P6 ours: one webhook per message, endpoint answering in {ENDPOINT_DELAY * 1000:.0f} ms"
        )
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
        received = httpx.get(url, timeout=30).json()
    finally:
        endpoint.stop()
    r = (
        round(ours["per_second"] / plain["per_second"], 3)
        if ours.get("per_second") and plain.get("per_second")
        else None
    )
    drained = drain.get("seconds")
    return {
        "value": ours["per_second"],
        "baseline": plain["per_second"],
        "ratio": r,
        "goal": f"ratio >= {GOAL_RATIO} and the webhook backlog drained within "
        f"{GOAL_DRAIN_SECONDS:g} s of the last delivery",
        "met": (r or 0) >= GOAL_RATIO and drained is not None and drained <= GOAL_DRAIN_SECONDS,
        "unit": "messages/s end to end (submit -> delivered), one webhook each vs none",
        "drain_seconds": drained,
        "webhooks_verified": received["verified"],
        "webhooks_unique": received["unique"],
        "webhooks_rejected": received["rejected"],
        "webhook_dead": int(bench.redis.zcard(keys.WEBHOOK_DEAD)),
        "endpoint_delay_ms": ENDPOINT_DELAY * 1000,
        "ours": ours,
        "without_webhooks": plain,
    }
