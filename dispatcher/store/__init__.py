"""The status store, by pipeline stage: one Redis hash per message plus a bounded history.

Every state change is one Lua script (``lua/``), so it is atomic and only moves
forward: once a message is ``delivered``, ``failed`` or ``dead`` no late or
duplicate worker can change it (only an operator's replay of a dead letter
sends it round again). Times come from Redis's own clock, so leases mean the
same on every machine. docs/architecture.md draws the state machine and lists
every script with its keys.

- ``submit``    record ``queued`` (with its task and gate), or undo it
- ``lease``     lease a message for an attempt, record the attempt's outcome
- ``pending``   the doorbell: drain and lease waiting messages, ring a stalled lane
- ``recovery``  claim what is overdue (the reaper), replay dead letters, trace rejects
- ``liveness``  heartbeats of the processes that take leases (a dead holder's lease breaks)
- ``schedule``  queue messages whose ``sendAt`` has come (the scheduler)
- ``withdraw``  cancel a message not sent yet, record a recall of a delivered one
- ``read``      records, dead letters, counters
- ``recipients`` per-recipient outcomes of a multi-recipient message
"""

from __future__ import annotations

import redis

from dispatcher.config import Settings
from dispatcher.store.lease import (
    LATENCY_BUCKETS_MS,
    Lease,
    LeaseStore,
    StandDown,
    StandDownReason,
    Transition,
)
from dispatcher.store.liveness import Heartbeat, LivenessStore
from dispatcher.store.pending import Drained, PendingLane, PendingStore, Ring
from dispatcher.store.policy import StorePolicy
from dispatcher.store.read import ReadStore
from dispatcher.store.recipients import RecipientStore
from dispatcher.store.recovery import (
    DiscardOutcome,
    Overdue,
    Reaper,
    RecoveryStore,
    ReplayOutcome,
)
from dispatcher.store.schedule import Scheduler, ScheduleStore
from dispatcher.store.submit import CreateCall, CreateOutcome, CreateResult, SubmitStore
from dispatcher.store.withdraw import CancelOutcome, CancelResult, WithdrawStore


class StatusStore:
    """The stages over one Redis client: ``submit``, ``lease``, ``pending``, ``recovery``,
    ``liveness``, ``schedule``, ``withdraw``, ``read``, ``recipients``."""

    def __init__(self, client: redis.Redis, policy: StorePolicy | None = None) -> None:
        self.redis = client
        self.policy = policy or StorePolicy()
        self.submit = SubmitStore(client, self.policy)
        self.lease = LeaseStore(client, self.policy)
        self.pending = PendingStore(client, self.policy)
        self.recovery = RecoveryStore(client, self.policy)
        self.liveness = LivenessStore(client, self.policy)
        self.schedule = ScheduleStore(client, self.policy)
        self.withdraw = WithdrawStore(client, self.policy)
        self.read = ReadStore(client)
        self.recipients = RecipientStore(client, self.policy)

    @classmethod
    def from_settings(cls, client: redis.Redis, settings: Settings) -> StatusStore:
        return cls(client, StorePolicy.from_settings(settings))


__all__ = [
    "LATENCY_BUCKETS_MS",
    "CancelOutcome",
    "CancelResult",
    "CreateCall",
    "CreateOutcome",
    "CreateResult",
    "DiscardOutcome",
    "Drained",
    "Heartbeat",
    "Lease",
    "LeaseStore",
    "LivenessStore",
    "Overdue",
    "PendingLane",
    "PendingStore",
    "ReadStore",
    "Reaper",
    "RecoveryStore",
    "ReplayOutcome",
    "Ring",
    "ScheduleStore",
    "Scheduler",
    "StandDown",
    "StandDownReason",
    "StatusStore",
    "StorePolicy",
    "SubmitStore",
    "Transition",
    "WithdrawStore",
]
