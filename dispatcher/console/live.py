"""The live view's data: the fleet's counters from Redis, queue backlog, and the workers.

Counters are the ones the transition scripts keep in the stats hash (the same
ones ``/metrics`` exports); the page turns two snapshots into rates, so nothing
is stored for it. Workers come from Celery's ``inspect stats`` broadcast, which
waits for answers: it runs in a thread of its own, at most every
``WORKER_REFRESH`` seconds while someone is watching, and the page gets the last
answer at once. Each answer's time is kept in Redis as the worker's last-seen
time, so a worker that stopped answering stays listed with how long ago it was
seen, whichever API process the page asks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from celery import Celery

from dispatcher import keys
from dispatcher.connections import REDIS_ERRORS
from dispatcher.producer import Dispatcher

log = logging.getLogger(__name__)

WORKER_REFRESH = 5.0
"""Seconds an inspect answer is reused."""
INSPECT_TIMEOUT = 1.0
"""Seconds the broadcast waits for workers to answer."""
FORGET_AFTER = 86400.0
"""A worker not seen for this long leaves the list."""

COUNTERS = {
    "delivered": "state:delivered",
    "retries": "state:retrying",
    "throttled": "provider:429",
    "dead": "state:dead",
    "failed": "state:failed",
}
"""The snapshot's counters and the stats-hash fields they come from."""


def snapshot(dispatcher: Dispatcher, roster: WorkerRoster) -> dict[str, Any]:
    """Everything the live page draws, as JSON-ready values (blocking: run in a thread)."""
    stats = dispatcher.store.read.stats()
    return {
        "at": time.time(),
        "counters": {name: stats.get(field, 0) for name, field in COUNTERS.items()},
        "deadLetters": dispatcher.store.read.dead_letter_count(),
        "queues": [
            {"name": q.queue, "backlog": q.depth, "oldestAge": q.oldest_age}
            for q in dispatcher.queue_backlog()
        ],
        "workers": roster.workers(),
    }


class WorkerRoster:
    """Celery workers and when each last answered, refreshed in the background."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.celery: Celery = dispatcher.celery
        self.redis = dispatcher.redis
        self._lock = threading.Lock()
        self._checked = 0.0
        self._refreshing = False

    def workers(self) -> list[dict[str, Any]]:
        """The known workers, newest answers first; starts a refresh when the last is old."""
        with self._lock:
            due = not self._refreshing and time.monotonic() - self._checked > WORKER_REFRESH
            if due:
                self._refreshing = True
        if due:
            threading.Thread(target=self._refresh, name="console-inspect", daemon=True).start()
        try:
            raw = self.redis.hgetall(keys.CONSOLE_WORKERS)
        except REDIS_ERRORS:
            return []
        now = time.time()
        listed = [json.loads(value) for value in raw.values()]
        for worker in listed:
            worker["seenAgo"] = max(0.0, now - worker["lastSeen"])
        return sorted(listed, key=lambda w: (w["seenAgo"] > WORKER_REFRESH * 3, w["name"]))

    def _refresh(self) -> None:
        try:
            answers = self.celery.control.inspect(timeout=INSPECT_TIMEOUT).stats() or {}
            self._remember(answers)
        except Exception as exc:  # the broker is down, or a worker answered garbage
            log.warning("console: could not ask the workers: %s", exc)
        finally:
            with self._lock:
                self._checked = time.monotonic()
                self._refreshing = False

    def _remember(self, answers: dict[str, Any]) -> None:
        now = time.time()
        pipe = self.redis.pipeline(transaction=False)
        for name, stats in answers.items():
            pool = stats.get("pool") or {}
            worker = {
                "name": name,
                "lastSeen": now,
                "pid": stats.get("pid"),
                "concurrency": pool.get("max-concurrency"),
                "processed": sum((stats.get("total") or {}).values()),
                "uptime": stats.get("uptime"),
            }
            pipe.hset(keys.CONSOLE_WORKERS, name, json.dumps(worker))
        pipe.hgetall(keys.CONSOLE_WORKERS)
        *_, known = pipe.execute()
        stale = [
            name
            for name, value in known.items()
            if now - json.loads(value)["lastSeen"] > FORGET_AFTER
        ]
        if stale:
            self.redis.hdel(keys.CONSOLE_WORKERS, *stale)
