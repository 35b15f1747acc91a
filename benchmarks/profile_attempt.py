"""Redis round trips and CPU profile of delivery attempts, in-process, no Celery.

    python benchmarks/profile_attempt.py [N] [--batch K] [--profile]

Starts a Redis and the Easemob simulator (its own process), records N text
messages as ``queued`` and delivers them three ways, counting the Redis round trips
per message (one per command or pipeline sent) and the CPU and wall time per message:
:func:`dispatcher.delivery.attempt` on each (one task per message), and the ring task's
batch (:func:`dispatcher.ring.deliver_lane`: drain and lease, then concurrent attempts)
with batches of 1 and of K (default ``DISPATCHER_DELIVERY_BATCH``'s). With ``--profile``,
where the CPU of the single attempts goes.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis.connection

from benchmarks import harness
from dispatcher import delivery, ring
from dispatcher.broker import make_celery
from dispatcher.channels.easemob import NAME, EasemobChannel
from dispatcher.config import Settings
from dispatcher.connections import redis_client
from dispatcher.doorbell import Doorbell
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef, new_message_id
from dispatcher.models import parse_message
from dispatcher.store import PendingLane, StatusStore

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hello"}}

sent: Counter[str] = Counter()
_original = redis.connection.AbstractConnection.send_packed_command


def _counting(self: object, command: object, check_health: bool = True) -> None:
    first = (command[0] if command else b"") if isinstance(command, list) else command
    head = bytes(first)[:60] if isinstance(first, bytes | bytearray | memoryview) else b""
    name = b"pipeline" if isinstance(command, list) and len(command) > 1 else b"?"
    parts = head.split(b"\r\n")
    if len(parts) > 2 and name == b"?":
        name = parts[2]
    sent[name.decode(errors="replace")] += 1
    _original(self, command, check_health)  # type: ignore[arg-type]


def _per_message(label: str, n: int, run: Any) -> None:
    """Run ``run()`` (which delivers ``n`` messages) counting round trips, CPU and wall."""
    sent.clear()
    redis.connection.AbstractConnection.send_packed_command = _counting  # type: ignore[method-assign]
    started, wall = time.process_time(), time.monotonic()
    try:
        run()
    finally:
        redis.connection.AbstractConnection.send_packed_command = _original  # type: ignore[method-assign]
    cpu, wall = time.process_time() - started, time.monotonic() - wall
    print(f"{label}: {n} messages")
    print(f"  redis round trips per message: {sum(sent.values()) / n:.2f}  {dict(sent)}")
    print(
        f"  cpu per message: {1000 * cpu / n:.3f} ms   wall per message: {1000 * wall / n:.3f} ms"
    )


def _batches(settings: Settings, store: StatusStore, channels: Any, n: int, k: int) -> None:
    """Record ``n`` messages on the doorbell's lane and deliver them in batches of ``k``."""
    batch_settings = settings.model_copy(update={"delivery_batch": k})
    bell = Doorbell(make_celery(batch_settings), batch_settings, direct=True)  # rings in-script
    lane = PendingLane(settings.queue)
    message = parse_message(TEXT)
    for _ in range(n):
        ref = MessageRef(DEFAULT_NAMESPACE, new_message_id(settings.id_prefix))
        store.submit.create(store.submit.prepare(ref, message, channel=NAME, pending=lane))
    store.redis.delete(lane.flag)  # no ring to publish: the loop below drains

    def run() -> None:
        done = 0
        while done < n:
            outcomes = ring.deliver_lane(
                bell, settings=batch_settings, store=store, channels=channels, resolve_media=None
            )
            assert outcomes and all(o == "delivered" for _, o in outcomes), outcomes
            done += len(outcomes)
        store.redis.delete(lane.flag)

    _per_message(f"ring task, batches of {k}", n, run)


def main() -> None:
    args = sys.argv[1:]
    batch = int(args[args.index("--batch") + 1]) if "--batch" in args else Settings().delivery_batch
    n = int(
        next((a for i, a in enumerate(args) if a.isdigit() and args[i - 1] != "--batch"), "500")
    )
    profile = "--profile" in sys.argv
    server, _ = harness.start_redis()
    sim = harness.Simulator().start()
    try:
        values: dict[str, Any] = {
            k.removeprefix("DISPATCHER_").lower(): v
            for k, v in harness.easemob_env(sim.url, harness.UNLIMITED).items()
        }
        settings = Settings(redis_url=server.url, **values)
        client = redis_client(settings)
        store = StatusStore.from_settings(client, settings)
        channels = {NAME: EasemobChannel(settings, client)}
        message = parse_message(TEXT)
        ids = [
            MessageRef(DEFAULT_NAMESPACE, new_message_id(settings.id_prefix)) for _ in range(n + 1)
        ]
        for ref in ids:
            store.submit.create(store.submit.prepare(ref, message, channel=NAME))
        kwargs = {"settings": settings, "store": store, "channels": channels, "resolve_media": None}
        delivery.attempt(ids.pop(), **kwargs)  # type: ignore[arg-type]  # warm-up: token, scripts

        profiler = cProfile.Profile() if profile else None

        def singles() -> None:
            if profiler:
                profiler.enable()
            for ref in ids:
                outcome = delivery.attempt(ref, **kwargs)  # type: ignore[arg-type]
                assert outcome.state == "delivered", outcome
            if profiler:
                profiler.disable()

        _per_message("one attempt per message (delivery.attempt)", n, singles)
        for size in (1, batch):
            _batches(settings, store, channels, n, size)
        if profiler:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(
                sys.argv[-1] if sys.argv[-1] in ("tottime", "cumulative") else "cumulative"
            ).print_stats(45)
            print(out.getvalue())
    finally:
        sim.stop()
        server.cleanup()


if __name__ == "__main__":
    main()
