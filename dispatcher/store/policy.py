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
    retry_grace: float = 30.0
    """Seconds past a retry's due time before recovery publishes it again."""
    max_requeues: int = 5
    """Expired leases a message survives before it is dead-lettered as poison."""

    @classmethod
    def from_settings(cls, settings: Settings) -> StorePolicy:
        return cls(
            ttl=settings.status_ttl,
            history_limit=settings.history_limit,
            queued_grace=settings.queued_grace,
            retry_grace=settings.retry_grace,
            max_requeues=settings.max_requeues,
        )

    @property
    def queued_grace_ms(self) -> int:
        return int(self.queued_grace * 1000)
