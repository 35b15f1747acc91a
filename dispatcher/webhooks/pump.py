"""The webhook pump: recorded events become deliveries, due deliveries become tasks.

Every worker runs one, and one of them works at a time: the pump holding a lease in
Redis (renewed every round, taken over by another pump once it lapses after a worker
died). A few pumps polling the same outbox read its events over and over and split the
work into small batches; one pump makes batches of whatever arrived since its last
round. The lease is a matter of cost only: both steps are atomic claims in Redis, so
several pumps never fan an event out twice nor publish one claim twice. A delivery
whose task is lost (broker, worker killed mid-send) is claimed again when its claim's
lease ends (DISPATCHER_WEBHOOK_CLAIM_SECONDS).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from dispatcher.background import BackgroundLoop
from dispatcher.connections import REDIS_ERRORS
from dispatcher.ids import MessageRef
from dispatcher.webhooks.config import Subscriptions
from dispatcher.webhooks.outbox import WebhookStore, delivery_member
from dispatcher.webhooks.send import build_body

log = logging.getLogger(__name__)


@dataclass
class WebhookPump(BackgroundLoop):
    store: WebhookStore
    subscriptions: Subscriptions
    publish: Callable[[list[tuple[str, int]]], None]
    interval: float = 0.5
    claim_seconds: float = 60.0
    batch: int = 200
    per_task: int = 10
    """Deliveries of one endpoint sent by one task (a task costs more than a send)."""
    owner: str = field(default_factory=lambda: uuid.uuid4().hex)
    """Names this pump in the lease."""
    thread_name: ClassVar[str] = "dispatcher-webhooks"

    def fan_out(self) -> int:
        """One batch of outbox events into deliveries (one Redis call); how many events."""
        events = self.store.pending_events(self.batch)
        plan = []
        for event in events:
            ref = MessageRef.parse(event.member)
            targets = self.subscriptions.targets(event.client, event.type)
            body = build_body(event, ref.id) if targets else ""
            members = {delivery_member(endpoint, event.id): body for endpoint in targets}
            plan.append((event, ref.id, members))
            log.debug("getMessageId=%s webhook-id=%s %s for %d endpoint(s)",
                      ref.id, event.id, event.type, len(targets))  # fmt: skip
        if plan:
            self.store.fan_out(plan)
        return len(events)

    def promote(self) -> int:
        """Publish one batch of due deliveries, grouped by endpoint; how many."""
        claimed = self.store.claim_due(self.batch, self.claim_seconds)
        by_endpoint: dict[str, list[tuple[str, int]]] = {}
        for member, claim in claimed:
            by_endpoint.setdefault(member.partition(":")[0], []).append((member, claim))
        for group in by_endpoint.values():
            for start in range(0, len(group), self.per_task):
                self.publish(group[start : start + self.per_task])
        return len(claimed)

    def run_once(self) -> int:
        return self.fan_out() + self.promote()

    @property
    def lease_seconds(self) -> float:
        """How long the lease outlives its last renewal: a few rounds, at least 2 s, so a
        slow round keeps it and a dead worker's lapses soon."""
        return max(2.0, 5 * self.interval)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                # A full batch: more is waiting, so the next round starts at once.
                while (
                    not self._stop.is_set()
                    and self.store.hold_pump(self.owner, self.lease_seconds)
                    and self.run_once() >= self.batch
                ):
                    pass
            except REDIS_ERRORS as exc:
                log.warning("webhook pump: Redis unavailable (%s); trying again", exc)
            except Exception:
                log.exception("webhook pump: unexpected error; trying again")
            self._stop.wait(self.interval)
        # Another pump takes over at its next round (if Redis is away, the lease lapses).
        with contextlib.suppress(*REDIS_ERRORS):
            self.store.release_pump(self.owner)
