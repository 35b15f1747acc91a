"""What a Sentinel URL and ``DISPATCHER_REDIS_MIN_REPLICAS`` cost a submit (docs/deployment.md,
"Redis Sentinel"), three setups side by side in one run:

- ``plain``: ``redis://`` to the primary, no minimum (today's single-node figure);
- ``sentinel``: the same primary found through three sentinels, no minimum;
- ``sentinel_wait1``: the same, with ``DISPATCHER_REDIS_MIN_REPLICAS=1`` (one replica).

Two figures each: P1-style, one Python producer submitting in a loop (``Dispatcher.submit``,
the blocking client), rounds of the three interleaved so the machine's load falls on all
alike; P4-style, ``dispatcher api --workers 2`` under the load generator's 64 connections.
No worker runs: the submit alone is measured (record + task in one script, then WAIT).

    python benchmarks/replicas_bench.py --quick

Prints one JSON object; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness, http_bench
from dispatcher.config import Settings
from dispatcher.producer import Dispatcher
from tests.sentinel import SentinelSet

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hello"}}
ROUNDS = 6


def say(text: str) -> None:
    print(f"[replicas {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def setups(cluster: SentinelSet) -> dict[str, dict[str, str]]:
    plain = f"redis://127.0.0.1:{cluster.primary.port}/0"
    return {
        "plain": {"DISPATCHER_REDIS_URL": plain},
        "sentinel": {"DISPATCHER_REDIS_URL": cluster.url},
        "sentinel_wait1": {
            "DISPATCHER_REDIS_URL": cluster.url,
            "DISPATCHER_REDIS_MIN_REPLICAS": "1",
        },
    }


def producer_round(env: dict[str, str], n: int) -> list[float]:
    """Seconds per submit of ``n`` submits by one producer."""
    values: dict[str, Any] = {k.removeprefix("DISPATCHER_").lower(): v for k, v in env.items()}
    producer = Dispatcher(Settings(**values, queue=f"p1-{uuid.uuid4().hex[:6]}"))
    producer.submit(TEXT)  # connections opened, scripts loaded
    took = []
    for _ in range(n):
        started = time.perf_counter()
        producer.submit(TEXT)
        took.append(time.perf_counter() - started)
    producer.close()
    return took


def summary(took: list[float]) -> dict[str, float]:
    took = sorted(took)
    return {
        "per_second": round(len(took) / sum(took), 1),
        "mean_ms": round(1000 * sum(took) / len(took), 3),
        "p50_ms": round(1000 * took[len(took) // 2], 3),
        "p99_ms": round(1000 * took[int(0.99 * (len(took) - 1))], 3),
    }


def p1(cluster: SentinelSet, n: int) -> dict[str, Any]:
    took: dict[str, list[float]] = {name: [] for name in setups(cluster)}
    for round_ in range(ROUNDS):
        for name, env in setups(cluster).items():
            say(f"P1 round {round_ + 1}/{ROUNDS}: {name}, n={n}")
            took[name] += producer_round(env, n)
        cluster.primary_client().flushall()
    return {name: summary(values) for name, values in took.items()}


def p4(cluster: SentinelSet, n: int) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, env in setups(cluster).items():
        api, url = http_bench.api_process(SimpleNamespace(redis_url=""), **env)
        say(f"P4: {name}, n={n}")
        with harness.started(api):
            http_bench.wait_workers(api, http_bench.API_WORKERS)
            http_bench.wait_http(f"{url}/healthz", api)
            found[name] = http_bench.load(url, n)
        cluster.primary_client().flushall()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N")
    parser.add_argument("--only", default="P1,P4", help="P1, P4 or both")
    args = parser.parse_args()
    only = set(args.only.split(","))
    with SentinelSet(replicas=1) as cluster:
        result: dict[str, Any] = {"load_before": os.getloadavg()}
        if "P1" in only:
            result["P1"] = p1(cluster, 250 if args.quick else 1500)
        if "P4" in only:
            result["P4"] = p4(cluster, 3000 if args.quick else 20000)
        result["load_after"] = os.getloadavg()
    for key in ("P1", "P4"):
        if key in result:
            base = result[key]["plain"]["per_second"]
            for figures in result[key].values():
                figures["ratio_to_plain"] = round(figures["per_second"] / base, 3)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
