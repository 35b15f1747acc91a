"""Bare Celery baselines: the least a Celery worker can do, with dispatcher's Celery settings.

``celery -A benchmarks.baseline_app worker -Q <queue>``. Configured from the
environment (``BENCH_BROKER_URL``, ``BENCH_QUEUE``, ``BENCH_POST_URL``) so
the benchmark runs it on the same Redis and with the same pool and
concurrency as the dispatcher worker it is compared with. Nothing here is
part of the product.
"""

from __future__ import annotations

import os
import threading

import httpx
from celery import Celery

NOOP_TASK = "bench.noop"
POST_TASK = "bench.post"

app = Celery("bench_baseline", set_as_current=False)
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/0"),
    result_backend=None,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    task_default_queue=os.environ.get("BENCH_QUEUE", "bench"),
    # The reliability settings dispatcher's own app uses (worker.make_celery).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
    broker_pool_limit=16,
)

_client: httpx.Client | None = None
_client_lock = threading.Lock()


def shared_client() -> httpx.Client:
    """One pooled client per process, shared by every thread (the usual way to write it)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = httpx.Client(
                    timeout=httpx.Timeout(10.0, connect=5.0),
                    limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
                )
    return _client


@app.task(name=NOOP_TASK, ignore_result=True)
def noop(message_id: str) -> None:
    return None


@app.task(name=POST_TASK, ignore_result=True)
def post(message_id: str) -> int:
    response = shared_client().post(
        os.environ["BENCH_POST_URL"],
        params={"useMsgId": "true"},
        content=(
            b'{"target_type":"users","target":["u2"],"msg":{"type":"txt","msg":"hi"},'
            b'"from":"u1","ext":{"id":"' + message_id.encode() + b'"}}'
        ),
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {os.environ['BENCH_TOKEN']}",
        },
    )
    return response.status_code
