"""How long the store keeps things and how long it waits before it recovers them."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.config import Settings


@dataclass(frozen=True, slots=True)
class StorePolicy:
    ttl: int = 604800
    """Seconds a status record and its history are kept after their last change."""
    history_limit: int = 50
    queued_grace: float = 300.0
    """Seconds a ``queued`` message may wait for a worker before recovery looks at it."""
    publish_grace: float = 15.0
    """Seconds a message recorded before its task is published to another broker may wait
    for the broker's confirmation (:meth:`SubmitStore.published`) before recovery
    publishes it: the producer died between the two (docs/deployment.md)."""
    retry_grace: float = 30.0
    """Seconds after a retry's promotion from the schedule (its due time) before recovery
    publishes it again: its task was lost."""
    max_requeues: int = 5
    """Expired leases a message survives before it is dead-lettered as poison."""
    worker_timeout: float = 10.0
    """Seconds without a heartbeat after which a worker process counts as dead: recovery
    breaks its leases then, not at their end (dispatcher/store/liveness.py)."""
    announced: frozenset[tuple[str, str]] = frozenset()
    """(client, event type) pairs some webhook endpoint takes: the scripts that make those
    changes record the event in the webhook outbox (docs/webhooks.md)."""

    @classmethod
    def from_settings(cls, settings: Settings) -> StorePolicy:
        return cls(
            ttl=settings.status_ttl,
            history_limit=settings.history_limit,
            queued_grace=settings.queued_grace,
            publish_grace=settings.publish_grace,
            retry_grace=settings.retry_grace,
            max_requeues=settings.max_requeues,
            worker_timeout=settings.worker_timeout,
            announced=frozenset(
                (client, event.value)
                for client, config in settings.clients.items()
                for endpoint in config.webhooks
                for event in endpoint.events
            ),
        )

    def announces(self, client: str | None, event: str) -> bool:
        return client is not None and (client, event) in self.announced

    def clients_announcing(self, event: str) -> str:
        """``,a,b,``: the clients whose ``event`` the scripts record (for a script's find)."""
        return "," + ",".join(sorted(c for c, e in self.announced if e == event)) + ","

    @property
    def queued_grace_ms(self) -> int:
        return int(self.queued_grace * 1000)

    @property
    def publish_grace_ms(self) -> int:
        return int(self.publish_grace * 1000)

    @property
    def retry_grace_ms(self) -> int:
        return int(self.retry_grace * 1000)

    @property
    def worker_timeout_ms(self) -> int:
        return int(self.worker_timeout * 1000)
