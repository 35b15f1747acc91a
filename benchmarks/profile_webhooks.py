"""Redis round trips and CPU profile of the webhook path, in-process, no Celery.

    python benchmarks/profile_webhooks.py [N] [--profile] [tottime|cumulative]
    python benchmarks/profile_webhooks.py [N] --worker

Starts a Redis and the benchmark's webhook endpoint (its own process, answering in
20 ms) and records N ``message.delivered`` events in the outbox as the store scripts do.
Then, in-process, runs the pump (fan-out, claims) and the webhook task's code on every
batch it would publish, counting the Redis round trips (one per command or pipeline
sent) and, with ``--profile``, where the CPU goes (this thread's; the sends run on the
task's sender threads). With ``--worker`` a real worker process (the product's pool)
sends them instead, Celery publish and consume included: its CPU per event, less what
it burns idle over the same time. ``DISPATCHER_WEBHOOK_*`` variables of the
environment reach the worker (``BENCH_PYSPY=<dir>`` samples it with py-spy).
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.connection

from benchmarks import harness, webhooks_bench
from benchmarks.profile_attempt import _counting, _original, sent
from dispatcher import keys
from dispatcher.config import Settings
from dispatcher.connections import redis_client
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef, new_message_id
from dispatcher.webhooks.outbox import WebhookStore
from dispatcher.webhooks.pump import WebhookPump


def record_events(client: Any, settings: Settings, n: int) -> None:
    now = int(time.time() * 1000)
    for _ in range(n):
        ref = MessageRef(DEFAULT_NAMESPACE, new_message_id(settings.id_prefix))
        event = {"type": "message.delivered", "member": ref.member, "client": "bench",
                 "at": now, "state": "delivered", "attempts": "1", "channel": "easemob",
                 "providerMessageId": "p" + ref.id, "deliveredAt": str(now)}  # fmt: skip
        client.rpush(keys.shard_of(ref).outbox, json.dumps(event))


def in_worker(server_url: str, clients: dict[str, Any], n: int, endpoint_pid: int) -> None:
    settings = Settings(redis_url=server_url, clients=clients)
    client = redis_client(settings)
    defaults = Settings(_env_file=None)
    env = {
        **harness.easemob_env("http://127.0.0.1:9", harness.UNLIMITED),
        "DISPATCHER_REDIS_URL": server_url,
        "DISPATCHER_QUEUE": "profile-deliveries",
        "DISPATCHER_WEBHOOK_QUEUE": "profile-webhooks",
        "DISPATCHER_CLIENTS": json.dumps(clients),
        "DISPATCHER_WEBHOOK_ALLOW_LOOPBACK": "true",
        "DISPATCHER_LOG_LEVEL": "INFO",
        **{k: v for k, v in os.environ.items() if k.startswith("DISPATCHER_WEBHOOK_")},
    }
    worker = harness.celery_worker(
        "webhooks", "dispatcher.worker", "profile-deliveries,profile-webhooks", env,
        pool=defaults.worker_pool, concurrency=defaults.worker_concurrency,
    )  # fmt: skip
    with harness.started(worker):
        spy = harness.py_spy(worker.pid, "webhooks")
        record_events(client, settings, 20)  # warm-up: scripts, connections, threads
        harness.wait_until(lambda: client.zcard(keys.WEBHOOK_DUE) == 0, 60)
        idle_from, wall = harness.cpu_seconds(worker.pid), time.monotonic()
        time.sleep(3)
        idle = (harness.cpu_seconds(worker.pid) - idle_from) / (time.monotonic() - wall)
        cpu, wall = harness.cpu_seconds(worker.pid), time.monotonic()
        receiver_cpu = harness.cpu_seconds(endpoint_pid)
        record_events(client, settings, n)
        harness.wait_until(
            lambda: WebhookStore(client).backlog() == {"outbox": 0, "pending": 0, "dead": 0},
            600,
        )
        wall = time.monotonic() - wall
        cpu = harness.cpu_seconds(worker.pid) - cpu - idle * wall
        receiver_cpu = harness.cpu_seconds(endpoint_pid) - receiver_cpu
        harness.stop_py_spy(spy)
    print(f"events: {n} in {wall:.2f} s ({n / wall:.0f}/s)")
    print(f"worker cpu per event: {1000 * cpu / n:.3f} ms (idle {1000 * idle:.0f} ms/s subtracted)")
    print(f"receiver cpu per event: {1000 * receiver_cpu / n:.3f} ms")


def main() -> None:
    n = int(next((a for a in sys.argv[1:] if a.isdigit()), "1000"))
    profile = "--profile" in sys.argv
    server, _ = harness.start_redis()
    endpoint, url = webhooks_bench.start_endpoint()
    try:
        clients = {
            "bench": {
                "secret": "bench-client-secret",
                "webhooks": [{"url": f"{url}/webhooks/bench", "secret": webhooks_bench.SECRET}],
            }
        }
        if "--worker" in sys.argv:
            in_worker(server.url, clients, n, endpoint.pid)
            return
        from dispatcher.webhooks.send import WebhookHttp
        from dispatcher.webhooks.task import Senders, run_webhook_task

        settings = Settings(redis_url=server.url, clients=clients, webhook_allow_loopback=True)
        client = redis_client(settings)
        store = WebhookStore(client)
        batches: list[list[tuple[str, int]]] = []
        pump = WebhookPump(
            store, settings.webhook_subscriptions(), batches.append, per_task=settings.webhook_batch
        )
        http = WebhookHttp(timeout=settings.webhook_timeout, allow_loopback=True)
        senders = Senders()
        task = SimpleNamespace(settings=settings, store=store,
                               subscriptions=pump.subscriptions, http=http, senders=senders)  # fmt: skip

        def drain() -> list[str]:
            outcomes = []
            while pump.run_once():
                for batch in batches:
                    outcomes += run_webhook_task(task, [list(m) for m in batch], time.time())  # type: ignore[arg-type]
                batches.clear()
            return outcomes

        record_events(client, settings, 10)
        drain()  # warm-up: scripts, connections

        record_events(client, settings, n)
        sent.clear()
        redis.connection.AbstractConnection.send_packed_command = _counting  # type: ignore[method-assign]
        profiler = cProfile.Profile(time.thread_time) if profile else None  # CPU, not wall
        started, wall = time.process_time(), time.monotonic()
        if profiler:
            profiler.enable()
        outcomes = drain()
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - started, time.monotonic() - wall
        redis.connection.AbstractConnection.send_packed_command = _original  # type: ignore[method-assign]
        assert outcomes.count("delivered") == n, outcomes[:5]
        total = sum(sent.values())
        print(f"events: {n}")
        print(f"redis round trips per event: {total / n:.2f}  {dict(sent)}")
        print(f"cpu per event: {1000 * cpu / n:.3f} ms   wall per event: {1000 * wall / n:.3f} ms")
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(
                sys.argv[-1] if sys.argv[-1] in ("tottime", "cumulative") else "cumulative"
            ).print_stats(45)
            print(out.getvalue())
    finally:
        endpoint.stop()
        server.cleanup()


if __name__ == "__main__":
    main()
