"""A small HTTP/1.1 load generator: N signed submits over C keep-alive connections.

    python -m benchmarks.loadgen URL N CONNECTIONS [BATCH]

With ``BATCH`` each request is a batch submit of that many texts (``N`` requests).

asyncio (uvloop when installed) on raw streams, requests built and signed
before the clock starts, so the generator spends as little CPU per request
as it can (it shares the machine with what it measures). Prints one JSON
line: requests/s, latency percentiles, status counts.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from urllib.parse import urlencode, urlsplit

from dispatcher.api.paths import SUBMIT, SUBMIT_BATCH
from dispatcher.api.signing import compute_sign

CLIENT = "bench"
CHANNEL = "bench"
SECRET = "bench-secret-0123456789"
WARM_MAX = 2048
TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hello"}}


def build_requests(host: str, port: int, n: int, batch: int = 0) -> list[bytes]:
    payload = {"messages": [TEXT] * batch} if batch else TEXT
    path = SUBMIT_BATCH if batch else SUBMIT
    body = json.dumps(payload, separators=(",", ":")).encode()
    now = str(int(time.time()))
    requests = []
    for _ in range(n):
        params = {"client": CLIENT, "channel": CHANNEL, "timestamp": now, "nonce": uuid.uuid4().hex}
        params["sign"] = compute_sign(SECRET, "POST", path, params, body)
        head = (
            f"POST {path}?{urlencode(params)} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


class Connection:
    """One keep-alive connection; reopened (and counted) if the server closed it while idle."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reopened = 0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def exchange(self, request: bytes) -> bytes:
        """Send ``request``, read the answer's head (the body is left to read)."""
        assert self.reader is not None and self.writer is not None
        self.writer.write(request)
        try:
            return await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
        # Closed before reading the request (the server's idle timeout): send it again.
        self.writer.close()
        self.reopened += 1
        await self.open()
        return await self.exchange(request)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def converse(
    stream: Connection, queue: list[bytes], latencies: list[float], statuses: Counter[str]
) -> None:
    while queue:
        request = queue.pop()
        started = time.perf_counter()
        head = await stream.exchange(request)
        status = int(head[9:12])
        length = 0
        retry_after = False
        for line in head.split(b"\r\n"):
            name = line[:15].lower()
            if name == b"content-length:":
                length = int(line[15:])
            elif name[:12] == b"retry-after:":
                retry_after = True
        if length:
            assert stream.reader is not None
            await stream.reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        # A deliberate refusal ("service busy", 429) says when to come back.
        statuses[f"{status}+retry-after" if retry_after else str(status)] += 1


async def run(url: str, n: int, connections: int, batch: int = 0) -> dict[str, object]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    # Enough to start every server thread (Celery builds its result backend once per thread)
    # and to have every connection's server side take a request.
    warm_count = max(connections, min(connections * (2 if batch else 16), WARM_MAX))
    warm = build_requests(host, port, warm_count, batch)
    queue = build_requests(host, port, n, batch)
    # Every connection is opened before the clock starts and kept for the measured run:
    # the figure is submits over established keep-alive connections, not connection set-up
    # (which a fleet of senders pays once; reported apart as connect_seconds).
    opening = time.perf_counter()
    streams = await asyncio.gather(*(Connection(host, port).open() for _ in range(connections)))
    connect_seconds = time.perf_counter() - opening
    await asyncio.gather(*(converse(stream, warm, [], Counter()) for stream in streams))
    warm_reopened = sum(stream.reopened for stream in streams)
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    cpu = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(converse(stream, queue, latencies, statuses) for stream in streams))
    elapsed = time.perf_counter() - started
    for stream in streams:
        stream.close()
    latencies.sort()

    def pct(p: float) -> float:
        return round(1000 * latencies[min(len(latencies) - 1, int(p * len(latencies)))], 2)

    return {
        "per_second": round(len(latencies) / elapsed, 1),
        "n": len(latencies),
        "seconds": round(elapsed, 3),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "statuses": dict(sorted(statuses.items())),
        "warm_requests": warm_count,
        "loadgen_cpu_ms_per_request": round(1000 * (time.process_time() - cpu) / max(n, 1), 3),
        "connect_seconds": round(connect_seconds, 3),
        "reopened": sum(stream.reopened for stream in streams) - warm_reopened,
    }


def main() -> None:
    url, n, connections = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batch = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(url, n, connections, batch))
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
