"""The Redis side of webhooks: events, deliveries, their outcomes, dead letters, endpoints.

An event is recorded by the script that makes the state change (``lua/outbox.lua``
included by ``finish.lua`` and ``claim_overdue.lua``), so no event is lost between the
change and its announcement. The pump fans each event out to one delivery per
subscribed endpoint (``webhook_fanout.lua``) and claims due deliveries for the
``webhooks`` queue (``webhook_claim.lua``); a claim is a lease, so a delivery whose
worker died is claimed again. Retry times are kept here, in a sorted set, never as
broker ETAs (docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.store.read import over_shards, sum_over_shards
from dispatcher.store.scripts import load

TAKEN_TTL_MS = 10 * 60 * 1000
"""How long a fanned-out event stays marked taken: far longer than an event waits in its
outbox between a fan-out and its removal (milliseconds), short enough that the marks of
a busy day take little memory."""


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    DEAD = "dead"
    RELEASED = "released"
    """Not attempted: due again now (a batch ran short of its claim's time)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded event, as the outbox holds it (``raw`` is its exact text)."""

    raw: str
    id: str
    type: str
    member: str
    client: str
    at_ms: int
    snapshot: dict[str, Any]
    traceparent: str | None
    """The message's trace (dispatcher/tracing.py), when it was traced."""

    @classmethod
    def parse(cls, raw: str) -> Event:
        fields = json.loads(raw)
        # Stable for the event (its text never changes), opaque to receivers.
        webhook_id = "msg_" + hashlib.sha256(raw.encode()).hexdigest()[:27]
        return cls(
            raw,
            webhook_id,
            str(fields.pop("type")),
            str(fields.pop("member")),
            str(fields.pop("client", "")),
            int(fields.pop("at")),
            fields,
            fields.pop("traceparent", None) or None,
        )


def delivery_member(endpoint_id: str, webhook_id: str) -> str:
    return f"{endpoint_id}:{webhook_id}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one endpoint."""

    member: str
    body: str
    attempts: int
    claim: int
    created_ms: int
    last_error: str | None = None
    last_status: int | None = None
    died_ms: int | None = None
    message_id: str | None = None
    traceparent: str | None = None
    """The message's trace, which every attempt joins (None: it was not traced)."""

    @property
    def endpoint_id(self) -> str:
        return self.member.partition(":")[0]

    @property
    def webhook_id(self) -> str:
        return self.member.partition(":")[2]

    def summary(self) -> dict[str, Any]:
        """What an operator sees of it (the body holds no secret)."""
        body = json.loads(self.body)
        return {
            "endpoint": self.endpoint_id,
            "webhookId": self.webhook_id,
            "type": body.get("type"),
            "getMessageId": body.get("data", {}).get("getMessageId"),
            "attempts": self.attempts,
            "lastStatus": self.last_status,
            "lastError": self.last_error,
            "createdAt": self.created_ms / 1000,
            "diedAt": None if self.died_ms is None else self.died_ms / 1000,
        }


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one claimed delivery, to record (``next_in``: seconds to the next
    attempt when retrying; ``disable``: why its endpoint is now disabled)."""

    delivery: Delivery
    outcome: Outcome
    attempted: bool
    status: int | None = None
    error: str | None = None
    next_in: float = 0.0
    disable: str | None = None


def _int(value: bytes | str | None) -> int | None:
    return None if value is None or value in (b"", "") else int(text(value))


def _delivery(member: str, fields: dict[bytes, bytes]) -> Delivery | None:
    if not fields.get(b"body"):
        return None
    return Delivery(
        member,
        text(fields[b"body"]),
        _int(fields.get(b"attempts")) or 0,
        _int(fields.get(b"claim")) or 0,
        _int(fields.get(b"createdAt")) or 0,
        text(fields[b"lastError"]) if fields.get(b"lastError") else None,
        _int(fields.get(b"lastStatus")),
        _int(fields.get(b"diedAt")),
        text(fields[b"message"]) if fields.get(b"message") else None,
        text(fields[b"traceparent"]) if fields.get(b"traceparent") else None,
    )


class WebhookStore:
    def __init__(self, client: redis.Redis, *, dead_ttl: int = 604800) -> None:
        self.redis = client
        self.dead_ttl = dead_ttl
        self._fanout = load("webhook_fanout")
        self._claim = load("webhook_claim")
        self._result = load("webhook_result")
        self._replay = load("webhook_replay")
        self._pump_lease = load("webhook_pump")
        self._delete_if_equal = load("delete_if_equal")

    # -- the pump

    def hold_pump(self, owner: str, seconds: float) -> bool:
        """Take or renew the pump's lease for ``seconds``; whether ``owner`` holds it."""
        reply = self._pump_lease(
            self.redis,
            {"lease": keys.WEBHOOK_PUMP},
            {"owner": owner, "ttl_ms": int(seconds * 1000)},
        )
        return bool(reply)

    def release_pump(self, owner: str) -> None:
        """Give the pump's lease up, if ``owner`` still holds it."""
        self._delete_if_equal(self.redis, {"target": keys.WEBHOOK_PUMP}, {"expected": owner})

    def pending_events(self, limit: int = 100) -> list[Event]:
        """Up to ``limit`` oldest events of each shard's outbox (one round trip)."""
        batches = over_shards(self.redis, lambda pipe, s: pipe.lrange(s.outbox, 0, limit - 1))
        return [Event.parse(text(raw)) for batch in batches for raw in batch]

    def fan_out(self, plan: list[tuple[Event, str, dict[str, str]]]) -> int:
        """Each event's deliveries (member -> body) in one call, with the event's
        getMessageId, then the events taken off their outboxes; how many deliveries were
        created (an event fanned out before creates none)."""
        args: list[str | int] = []
        delivery_keys: list[str] = []
        for event, message_id, bodies in plan:
            args += [event.id, len(bodies), message_id, event.traceparent or ""]
            for member, body in bodies.items():
                args += [member, body]
                delivery_keys.append(keys.webhook_delivery(member))
        reply = self._fanout(
            self.redis,
            {"due": keys.WEBHOOK_DUE, "deliveries": delivery_keys},
            {"taken_open": keys.WEBHOOK_TAKEN_OPEN, "taken_ttl_ms": TAKEN_TTL_MS, "plan": args},
        )
        pipe = self.redis.pipeline(transaction=False)
        for event, _, _ in plan:
            pipe.lrem(keys.shard_of(event.member).outbox, 1, event.raw)
        pipe.execute()
        return int(reply)

    def claim_due(self, limit: int, lease_seconds: float) -> list[tuple[str, int]]:
        reply = self._claim(
            self.redis,
            {"due": keys.WEBHOOK_DUE},
            {
                "limit": limit,
                "lease_ms": int(lease_seconds * 1000),
                "key_open": keys.WEBHOOK_DELIVERY_OPEN,
            },
        )
        items = [text(r) for r in reply]
        return [(items[i], int(items[i + 1])) for i in range(0, len(items), 2)]

    # -- the task

    def delivery(self, member: str) -> Delivery | None:
        return self.deliveries([member])[0]

    def deliveries(self, members: list[str]) -> list[Delivery | None]:
        """The deliveries in the order asked (None for gone ones), in one round trip."""
        return self.deliveries_and_health(members, None)[0]

    def deliveries_and_health(
        self, members: list[str], endpoint_id: str | None
    ) -> tuple[list[Delivery | None], dict[str, str]]:
        """The deliveries in the order asked (None for gone ones) and the health of
        ``endpoint_id`` (see :meth:`endpoint_health`), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(keys.webhook_delivery(member))
        if endpoint_id is not None:
            pipe.hgetall(keys.webhook_endpoint(endpoint_id))
        replies = pipe.execute()
        health = replies.pop() if endpoint_id is not None else {}
        found = [_delivery(m, fields) for m, fields in zip(members, replies, strict=True)]
        return found, {text(k): text(v) for k, v in health.items()}

    def record(
        self,
        delivery: Delivery,
        outcome: Outcome,
        *,
        attempted: bool,
        status: int | None = None,
        error: str | None = None,
        next_in: float = 0.0,
        disable: str | None = None,
    ) -> str:
        """Record one attempt's outcome: ok, stale (a newer claim exists) or missing."""
        result = Result(delivery, outcome, attempted, status, error, next_in, disable)
        return self.record_all([result])[0]

    def record_all(self, results: list[Result]) -> list[str]:
        """Record the outcomes of one endpoint's deliveries in one call; per result ok,
        stale (a newer claim exists) or missing."""
        if not results:
            return []
        endpoint_id = results[0].delivery.endpoint_id
        outcomes: list[str | int] = []
        for r in results:
            if r.delivery.endpoint_id != endpoint_id:
                raise ValueError("one call records the deliveries of one endpoint")
            outcomes += [r.delivery.member, r.delivery.claim, r.outcome.value,
                         1 if r.attempted else 0, "" if r.status is None else r.status,
                         r.error or "", int(r.next_in * 1000), r.disable or ""]  # fmt: skip
        reply = self._result(
            self.redis,
            {
                "due": keys.WEBHOOK_DUE,
                "dead": keys.WEBHOOK_DEAD,
                "endpoint": keys.webhook_endpoint(endpoint_id),
                "deliveries": [keys.webhook_delivery(r.delivery.member) for r in results],
            },
            {
                "dead_cap": keys.MAX_WEBHOOK_DEAD,
                "dead_ttl": self.dead_ttl,
                "key_open": keys.WEBHOOK_DELIVERY_OPEN,
                "outcomes": outcomes,
            },
        )
        return [text(verdict) for verdict in reply]

    # -- operators

    def dead_letters(self, limit: int = 100, offset: int = 0) -> list[Delivery]:
        members = self.redis.zrevrange(keys.WEBHOOK_DEAD, offset, offset + limit - 1)
        letters = (self.delivery(text(m)) for m in members if isinstance(m, bytes | str))
        return [letter for letter in letters if letter is not None]

    def replay(self, member: str) -> str:
        """ok, not_dead or missing."""
        reply = self._replay(
            self.redis,
            {
                "delivery": keys.webhook_delivery(member),
                "due": keys.WEBHOOK_DUE,
                "dead": keys.WEBHOOK_DEAD,
            },
            {"member": member},
        )
        return text(reply)

    def disabled(self, endpoint_id: str) -> str | None:
        """Why the endpoint is disabled, or None."""
        reason = self.redis.hget(keys.webhook_endpoint(endpoint_id), "disabled")
        return None if reason is None else text(reason)

    def endpoint_health(self, endpoint_id: str) -> dict[str, str]:
        fields = self.redis.hgetall(keys.webhook_endpoint(endpoint_id))
        return {text(k): text(v) for k, v in fields.items()}

    def enable(self, endpoint_id: str) -> bool:
        """Clear the endpoint's disabled mark and failure streak; whether it was disabled."""
        key = keys.webhook_endpoint(endpoint_id)
        pipe = self.redis.pipeline()
        pipe.hexists(key, "disabled")
        pipe.hdel(key, "disabled", "disabledAt", "failingSince")
        return bool(pipe.execute()[0])

    def backlog(self) -> dict[str, int]:
        outbox = sum_over_shards(self.redis, lambda pipe, shard: pipe.llen(shard.outbox))
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(keys.WEBHOOK_DUE)
        pipe.zcard(keys.WEBHOOK_DEAD)
        due, dead = pipe.execute()
        return {"outbox": outbox, "pending": int(due), "dead": int(dead)}
