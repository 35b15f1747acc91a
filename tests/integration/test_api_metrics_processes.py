"""``dispatcher api --workers 2``: whichever process answers a scrape, ``/metrics`` counts
the submits of both (prometheus_client's multiprocess mode), and the shared files go
away with the API."""

from __future__ import annotations

import glob
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from dispatcher.client import Client
from tests.conftest import ApiProcess
from tests.integration.test_api_end_to_end import scrape

pytestmark = pytest.mark.integration

SUBMITS = 120
CLIENT, SECRET, CHANNEL = "shop", "shop-secret-5d1f", "web"
TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}


def metric_dirs() -> set[str]:
    return set(glob.glob(f"{tempfile.gettempdir()}/dispatcher-api-metrics-*"))


def test_every_scrape_counts_the_submits_of_every_api_process(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    before = metric_dirs()
    clients = {CLIENT: {"secret": SECRET, "channels": [CHANNEL]}}
    env = {**worker_env, "DISPATCHER_CLIENTS": json.dumps(clients)}
    server = ApiProcess.start(env, tmp_path / "api.log", workers=2)
    try:

        def submit(i: int) -> str:
            # A connection per request, many at once: both processes accept some of them.
            with Client(server.url, CLIENT, SECRET, channel=CHANNEL) as client:
                return client.submit({**TEXT, "getMessageId": f"mp{i}"})

        with ThreadPoolExecutor(16) as pool:
            ids = list(pool.map(submit, range(SUBMITS)))
        assert len(set(ids)) == SUBMITS
        unsigned = httpx.post(f"{server.url}/sender/v1/handleBasicMessage", json=TEXT)
        assert unsigned.status_code == 401
        for _ in range(10):  # each scrape on a new connection, answered by either process
            samples = scrape(server.url)
            accepted = sum(
                v for k, v in samples.items() if k.startswith("dispatcher_accepted_total")
            )
            assert accepted == SUBMITS
            assert samples["dispatcher_submitted_total"] == SUBMITS + 1
            assert samples["dispatcher_rejected_total{client=-,reason=unauthorized}"] == 1
            assert samples["dispatcher_submits_in_flight"] == 0
            assert samples["dispatcher_redis_up"] == 1  # the fleet's figures are there too
        assert len(metric_dirs() - before) == 1
    finally:
        server.stop()
    assert metric_dirs() == before  # removed with the API
