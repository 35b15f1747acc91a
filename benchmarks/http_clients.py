"""CPU per provider POST through each pooled client we could use, against the simulator.

    python benchmarks/http_clients.py [N]

The same keep-alive POST of an Easemob text body, N times per client, in one
process: httpx's ``Client.post``, httpx's transport alone (what the channels
call), httpcore's ``ConnectionPool`` directly and urllib3 2.x's
``HTTPConnectionPool``. Rounds alternate between the clients so a loaded
machine weighs on each alike; the figure is the median CPU per POST.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpcore
import httpx
import urllib3

from benchmarks import harness

BODY = (
    b'{"target_type":"users","target":["u2"],"msg":{"type":"txt","msg":"hello"},'
    b'"from":"u1","ext":{}}'
)
ROUNDS = 5


def clients(base: str, token: str) -> dict[str, Callable[[], int]]:
    url = f"{base}/{harness.EASEMOB_ORG}/{harness.EASEMOB_APP}/messages?useMsgId=true"
    headers = {
        "Accept": "application/json",
        "User-Agent": "dispatcher",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {token}",
    }
    timeout = httpx.Timeout(10.0, connect=5.0)
    client = httpx.Client(timeout=timeout)
    transport = httpx.HTTPTransport()
    parsed = httpx.URL(url)
    pool = httpcore.ConnectionPool(max_connections=4)
    core_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
    core_timeout = {"connect": 5.0, "read": 10.0, "write": 10.0, "pool": 10.0}
    u3 = urllib3.HTTPConnectionPool(
        parsed.host, parsed.port, maxsize=4, timeout=urllib3.Timeout(connect=5.0, read=10.0)
    )
    path = parsed.raw_path.decode()

    def httpx_client() -> int:
        return client.post(url, content=BODY, headers=headers).status_code

    def httpx_transport() -> int:
        request = httpx.Request(
            "POST", parsed, content=BODY, headers=headers, extensions={"timeout": core_timeout}
        )
        response = transport.handle_request(request)
        try:
            response.read()
        finally:
            response.close()
        return response.status_code

    def httpcore_pool() -> int:
        response = pool.request(
            "POST", url, headers=core_headers, content=BODY, extensions={"timeout": core_timeout}
        )
        return response.status

    def urllib3_pool() -> int:
        response = u3.urlopen("POST", path, body=BODY, headers=headers, retries=False)
        return response.status

    def urllib3_as_httpx() -> int:
        raw = u3.urlopen("POST", path, body=BODY, headers=headers, retries=False)
        response = httpx.Response(raw.status, headers=list(raw.headers.items()), content=raw.data)
        return response.status_code

    return {
        "httpx.Client.post": httpx_client,
        "httpx transport": httpx_transport,
        "httpcore pool": httpcore_pool,
        "urllib3 pool": urllib3_pool,
        "urllib3 as httpx": urllib3_as_httpx,
    }


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    sim = harness.Simulator().start()
    try:
        calls = clients(sim.url, sim.token())
        cpu: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(ROUNDS):
            for name, call in calls.items():
                assert call() == 200, name
                started = time.process_time()
                for _ in range(n):
                    call()
                cpu[name].append((time.process_time() - started) / n)
        for name, figures in cpu.items():
            print(f"{name:20s} {1e6 * statistics.median(figures):7.1f} µs CPU per POST")
    finally:
        sim.stop()


if __name__ == "__main__":
    main()
