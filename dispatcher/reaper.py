"""Recovery: re-publish messages whose attempt, retry or queue entry was lost.

Celery on Redis redelivers a dead worker's task only after the visibility
timeout (an hour by default). The status store knows better: every
non-terminal message has a deadline in the in-flight index (lease end, retry
due time, queued time plus grace). The reaper claims the overdue ones
atomically and publishes them again; the new attempt takes over the expired
lease, and a message recovered too often is dead-lettered as poison.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from dispatcher.connections import REDIS_ERRORS
from dispatcher.status import StatusStore

log = logging.getLogger(__name__)


class Reaper:
    def __init__(
        self,
        store: StatusStore,
        publish: Callable[[str], None],
        *,
        interval: float,
        requeue_delay: float,
        batch: int = 500,
        queue_key: str | None = None,
    ) -> None:
        self.store = store
        self.publish = publish
        self.interval = interval
        self.requeue_delay = requeue_delay
        self.batch = batch
        self.queue_key = queue_key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[str]:
        """Claim and re-publish one batch of overdue messages; returns their ids."""
        claimed = self.store.claim_overdue(
            limit=self.batch, requeue_delay=self.requeue_delay, queue_key=self.queue_key
        )
        for message_id in claimed:
            self.publish(message_id)
            log.warning(
                "getMessageId=%s recovered: re-enqueued after its deadline passed", message_id
            )
        return claimed

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                while len(self.run_once()) == self.batch and not self._stop.is_set():
                    pass
            except REDIS_ERRORS as exc:
                log.warning("reaper: Redis unavailable (%s); trying again", exc)
            except Exception:
                log.exception("reaper: unexpected error; trying again")
            self._stop.wait(self.interval)

    def start(self) -> Reaper:
        self._thread = threading.Thread(target=self.run, name="dispatcher-reaper", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
