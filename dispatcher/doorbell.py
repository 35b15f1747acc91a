"""The doorbell as producers and workers ring it (docs/architecture.md, "The doorbell";
the store side is dispatcher/store/pending.py, the ring task's batch dispatcher/ring.py).

A message waiting for a worker is an entry on its lane's pending list; the lane is rung
(a Celery task naming it) only when no ring is outstanding. When the broker is the status
store's Redis the scripts push the ring themselves, in the step that needs it; with
another broker the caller publishes it: a producer after every create (the broker's
confirmation is what a submit promises), a drain or a promotion when the script says so.
"""

from __future__ import annotations

from celery import Celery

from dispatcher.config import Settings
from dispatcher.enqueue import RING_TASK, DirectEnqueue
from dispatcher.store import PendingLane, StatusStore
from dispatcher.store.pending import Ring


class Doorbell:
    """Rings one lane of a delivery queue: the ring's task message for a script to push
    (the broker is the status store's Redis), else a publish through kombu."""

    def __init__(
        self, app: Celery, settings: Settings, *, direct: bool, lane: PendingLane | None = None
    ):
        self.app = app
        self._lane = lane or PendingLane(settings.queue)
        self._direct = DirectEnqueue(app, self._lane.queue, enabled=direct, task_name=RING_TASK)

    @property
    def lane(self) -> PendingLane:
        return self._lane

    def ring_task(self) -> str | None:
        return self._direct.message_for(self._lane.name)

    def enqueue(self) -> tuple[str, str] | None:
        """(queue list key, ring task message) for a script to push, or None."""
        ring = self.ring_task()
        return None if ring is None else (self._lane.queue, ring)

    def publish(self) -> None:
        self.app.send_task(RING_TASK, args=(self._lane.name,), queue=self._lane.queue)

    def ring_if_stalled(self, store: StatusStore) -> None:
        """Ring the lane when messages wait and no ring is outstanding (the reaper's pass)."""
        if store.pending.ring_if_stalled(self._lane, self.ring_task()) is Ring.PUBLISH:
            self.publish()
        # A ring pushed or published here is logged by the task it starts.
