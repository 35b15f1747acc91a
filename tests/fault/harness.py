"""The fault harness of docs/reliability.md: receipts at the provider, worker PIDs, invariants I1-I4.

Fixtures live in ``conftest.py``; this module holds what tests import by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
import pytest
import redis

from dispatcher import keys
from dispatcher.sandbox.control import ConnectionDropped
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, WorkerProcess

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"
TOKEN_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/token"
TERMINAL = frozenset(
    {"delivered", "partially_delivered", "failed", "dead", "cancelled", "recalled"}
)
MAX_WORKERS = 4
"""The fault suite shares 2 cores: never more worker processes than this at once."""
BOTH_BROKERS = pytest.mark.parametrize("broker", ["redis", "amqp"], indirect=True)
"""Run a fault test once with the Redis broker and once with RabbitMQ (fixture ``broker``)."""


def new_id(prefix: str = "f") -> str:
    return prefix + uuid.uuid4().hex


def text_message(message_id: str, text: str = "fault test", to: str = "u2") -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "u1",
        "to": to,
        "messageInfo": {"textMessage": text},
        "getMessageId": message_id,
    }


# ---------------------------------------------------------------------------
# What the provider received, seen from outside the simulator


@dataclass(frozen=True)
class Receipt:
    """One ``/messages`` call as the Easemob simulator answered it."""

    message_id: str | None
    status: int | None
    """HTTP status sent, or None when the connection was dropped before any answer."""
    dropped: bool
    """A fault rule cut the connection (the request may or may not have been acted on)."""
    received_at: float
    answered_at: float

    @property
    def reached_provider(self) -> bool:
        """The provider accepted it, or may have (answer lost): what I2 counts."""
        return self.status == 200 or self.dropped


class ReceiptLedger:
    """Outer ASGI middleware around a simulator: which id each send carried, and its answer.

    The simulator's own ledger records requests, not answers; I2 counts sends
    the provider accepted (or may have: a lost answer), so a 401, 429 or
    injected 503 is not a delivery.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._receipts: list[Receipt] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/messages"):
            await self.app(scope, receive, send)
            return
        received_at = time.time()
        chunks: list[bytes] = []
        while True:
            event = await receive()
            if event["type"] == "http.disconnect":
                break
            chunks.append(event.get("body", b""))
            if not event.get("more_body", False):
                break
        body = b"".join(chunks)
        status: int | None = None
        dropped = False
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def capture(event: Any) -> None:
            nonlocal status
            if event["type"] == "http.response.start":
                status = event["status"]
            await send(event)

        try:
            await self.app(scope, replay, capture)
        except ConnectionDropped:
            dropped = True
            raise
        finally:
            self._record(
                Receipt(
                    _message_id(body),
                    None if dropped else status,
                    dropped,
                    received_at,
                    time.time(),
                )
            )

    def _record(self, receipt: Receipt) -> None:
        with self._lock:
            self._receipts.append(receipt)

    def receipts(self) -> list[Receipt]:
        with self._lock:
            return list(self._receipts)

    def clear(self) -> None:
        with self._lock:
            self._receipts.clear()


def _message_id(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
        return str(payload["ext"]["dispatcher"]["getMessageId"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Easemob:
    """A simulator of this test's own: its URL, app, and the receipt ledger."""

    url: str
    app: Any
    ledger: ReceiptLedger

    def fault(self, **rule: Any) -> None:
        httpx.post(f"{self.url}/_sandbox/faults", json=rule, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/_sandbox/faults", timeout=10).raise_for_status()

    def expire_tokens(self) -> int:
        reply = httpx.post(f"{self.url}/_sandbox/easemob/expire-tokens", timeout=10)
        return int(reply.raise_for_status().json()["expired"])

    def stats(self) -> dict[str, int]:
        reply = httpx.get(f"{self.url}/_sandbox/easemob/stats", timeout=10)
        return dict(reply.raise_for_status().json())

    def receipts(self, message_id: str | None = None) -> list[Receipt]:
        entries = self.ledger.receipts()
        if message_id is None:
            return entries
        return [r for r in entries if r.message_id == message_id]

    def reached(self) -> Counter[str]:
        """Per id: sends that reached the provider (accepted, or answer lost)."""
        return Counter(
            r.message_id for r in self.ledger.receipts() if r.reached_provider and r.message_id
        )

    def token_calls(self) -> int:
        return self.stats()["token_calls"]


# ---------------------------------------------------------------------------
# Worker processes with recorded PIDs


@dataclass
class FaultWorker(WorkerProcess):
    """A test worker whose PIDs (main process and prefork children) faults are sent to."""

    known_children: set[int] = field(default_factory=set)
    name_prefix: ClassVar[str] = "fault"

    def wait_ready(self, timeout: float = 30.0) -> Self:
        super().wait_ready(timeout)
        self.known_children |= set(self.children())
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def children(self) -> list[int]:
        """PIDs of this worker's child processes (prefork pool), from /proc."""
        found: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").glob("*"):
            try:
                found += [int(pid) for pid in (task / "children").read_text().split()]
            except OSError:
                continue
        return sorted(set(found))

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the main process, as a crash or the OOM killer would."""
        self.known_children |= set(self.children()) if self.alive() else set()
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def kill_whole(self) -> None:
        """SIGKILL the main process and every pool process at once, as a crash of the
        machine's container or the OOM killer taking the process group would."""
        victims = [self.pid, *self.children()] if self.alive() else []
        self.known_children |= set(victims[1:])
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        # Prefork children of a SIGKILLed parent: ours, so ours to end.
        for pid in self.known_children:
            _kill_if_ours(pid, self.env["DISPATCHER_QUEUE"])


def _kill_if_ours(pid: int, queue: str) -> None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return
    if f"DISPATCHER_QUEUE={queue}".encode() in environ:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_until(check: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout`` seconds.
    For conditions a busy machine reaches late: never a sleep of a guessed length."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------
# Steady load


class Load:
    """Submits through the API in a thread until stopped; records every answer with its time."""

    def __init__(self, submit: Callable[[dict[str, Any]], Any], pause: float = 0.02) -> None:
        self.submit = submit
        self.pause = pause
        self.accepted: list[str] = []
        self.answers: list[tuple[float, float, int, str]] = []  # (sent, answered, status, id)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            message_id = new_id("load")
            sent = time.monotonic()
            try:
                status = self.submit(text_message(message_id)).status_code
            except Exception:
                status = -1  # the API itself did not answer: never an acceptance
            self.answers.append((sent, time.monotonic(), status, message_id))
            if status == 200:
                self.accepted.append(message_id)
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def between(self, start: float, end: float) -> list[int]:
        """Answers to requests sent from ``start`` and answered by ``end`` (on a slow machine
        a request sent before an event may be answered well after it)."""
        return [status for sent, at, status, _ in self.answers if start <= sent and at <= end]

    def accepted_since(self, start: float) -> bool:
        return 200 in self.between(start, time.monotonic())


# ---------------------------------------------------------------------------
# Invariants


def submit_texts(dispatcher: Any, count: int, prefix: str = "f", **message: Any) -> list[str]:
    ids = []
    for _ in range(count):
        message_id = new_id(prefix)
        dispatcher.submit(text_message(message_id, **message))
        ids.append(message_id)
    return ids


def records_of(dispatcher: Any, ids: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        found.update(zip(chunk, dispatcher.status_many(chunk), strict=True))
    return found


def wait_all_terminal(dispatcher: Any, ids: list[str], timeout: float) -> dict[str, Any]:
    """I1: every id reaches a terminal state within ``timeout`` seconds; returns the records."""
    deadline = time.monotonic() + timeout
    pending = list(ids)
    records: dict[str, Any] = {}
    while True:
        try:
            current = records_of(dispatcher, pending)
        except redis.RedisError:
            current = {}
        for message_id, record in current.items():
            if record is not None and record.state.value in TERMINAL:
                records[message_id] = record
        pending = [m for m in pending if m not in records]
        if not pending:
            return records
        if time.monotonic() > deadline:
            sample = {m: current.get(m) for m in pending[:3]}
            raise AssertionError(
                f"I1: {len(pending)} of {len(ids)} ids not terminal after {timeout}s; e.g. {sample}"
            )
        time.sleep(0.1)


def _details(record: Any) -> str:
    return "\n".join(h.detail or "" for h in record.history)


def check_no_needless_duplicates(
    records: dict[str, Any], easemob: Easemob, *, allowed: dict[str, int] | None = None
) -> Counter[str]:
    """I2: one send reached the provider per id; two only when the history says why."""
    reached = easemob.reached()
    allowed = allowed or {}
    for message_id, record in records.items():
        details = _details(record)
        explained = any(marker in details for marker in ("ambiguous:", "took over", "recovery:"))
        limit = allowed.get(message_id, 2 if explained else 1)
        assert reached[message_id] <= limit, (
            f"I2: {message_id} reached the provider {reached[message_id]} times (limit {limit}); "
            f"history: {[(h.state.value, h.detail) for h in record.history]}"
        )
        if record.state.value == "delivered":
            assert reached[message_id] >= 1, f"I2: {message_id} delivered but never sent"
    return reached


def check_forward_only(records: dict[str, Any]) -> None:
    """I3: once terminal, a history only moves on by an operator's replay of a dead letter."""
    for message_id, record in records.items():
        states = [h.state.value for h in record.history]
        for index, entry in enumerate(record.history[:-1]):
            if entry.state.value not in TERMINAL:
                continue
            after = record.history[index + 1]
            replay = (
                entry.state.value == "dead"
                and after.state.value == "queued"
                and "replay" in (after.detail or "")
            )
            assert replay, f"I3: {message_id} left {entry.state.value}: {states}"
        assert record.state.value == states[-1], f"I3: {message_id} record/history disagree"


BOUNDED_KEYS = frozenset(
    key
    for s in keys.shards()
    for key in (s.inflight, s.dead, s.stats, s.rejected, s.schedule, s.beats)
)
"""Ours without a TTL: bounded by design (see dispatcher/keys.py)."""


def check_bounded_keys(client: redis.Redis, queues: Iterable[str] = ()) -> dict[str, int]:
    """I4: every key carries a TTL or is a bounded structure; returns counts by kind."""
    allowed = set(BOUNDED_KEYS) | {"unacked", "unacked_index"} | set(queues)
    counts: Counter[str] = Counter()
    offenders = []
    for raw in client.scan_iter(count=1000):
        name = raw.decode()
        if name in allowed or name.startswith("_kombu."):  # kombu bindings, per queue
            counts["bounded"] += 1
            continue
        if client.ttl(name) == -1:
            offenders.append(name)
        else:
            counts["ttl"] += 1
    assert not offenders, f"I4: keys without a TTL: {offenders[:10]} ({len(offenders)})"
    return dict(counts)


def check_nothing_in_flight(client: redis.Redis, ids: Iterable[str]) -> None:
    """The in-flight index holds no terminal message (it stays bounded)."""
    left = [m for m in ids if client.zscore(keys.shard_of(m).inflight, m) is not None]
    assert not left, f"I4: terminal ids still in the in-flight index: {left[:5]}"


def assert_invariants(
    dispatcher: Any,
    easemob: Easemob,
    ids: list[str],
    *,
    timeout: float,
    allowed: dict[str, int] | None = None,
) -> dict[str, Any]:
    """I1-I4 for ``ids``; returns their terminal records."""
    records = wait_all_terminal(dispatcher, ids, timeout)
    check_no_needless_duplicates(records, easemob, allowed=allowed)
    check_forward_only(records)
    client = dispatcher.redis
    check_nothing_in_flight(client, ids)
    check_bounded_keys(client, [dispatcher.settings.queue])
    return records
