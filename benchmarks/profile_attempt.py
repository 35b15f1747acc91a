"""Redis round trips and CPU profile of one delivery attempt, in-process, no Celery.

    python benchmarks/profile_attempt.py [N] [--profile]

Starts a Redis and the Easemob simulator (its own process), records N text
messages as ``queued`` and runs :func:`dispatcher.delivery.attempt` on each,
counting the Redis round trips the attempt makes (one per command or
pipeline sent) and, with ``--profile``, where the CPU goes.
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
from dispatcher import delivery
from dispatcher.channels.easemob import NAME, EasemobChannel
from dispatcher.config import Settings
from dispatcher.connections import redis_client
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef, new_message_id
from dispatcher.models import parse_message
from dispatcher.store import StatusStore

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


def main() -> None:
    n = int(next((a for a in sys.argv[1:] if a.isdigit()), "500"))
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

        redis.connection.AbstractConnection.send_packed_command = _counting  # type: ignore[method-assign]
        profiler = cProfile.Profile() if profile else None
        started = time.process_time()
        wall = time.monotonic()
        if profiler:
            profiler.enable()
        for ref in ids:
            outcome = delivery.attempt(ref, **kwargs)  # type: ignore[arg-type]
            assert outcome.state == "delivered", outcome
        if profiler:
            profiler.disable()
        cpu = time.process_time() - started
        wall = time.monotonic() - wall
        redis.connection.AbstractConnection.send_packed_command = _original  # type: ignore[method-assign]
        total = sum(sent.values())
        print(f"attempts: {n}")
        print(f"redis round trips per attempt: {total / n:.2f}  {dict(sent)}")
        print(
            f"cpu per attempt: {1000 * cpu / n:.3f} ms   wall per attempt: {1000 * wall / n:.3f} ms"
        )
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
