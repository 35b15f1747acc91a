"""The seed's request over real HTTP: uvicorn on loopback -> real Redis -> a real Celery
worker -> the Easemob simulator (and the Qiniu simulator for the video), then the status
endpoint shows ``delivered`` and ``/metrics`` moved with the traffic."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from dispatcher.api.app import create_app
from dispatcher.api.paths import SUBMIT
from dispatcher.api.signing import compute_legacy_sign, compute_sign
from dispatcher.client import Client
from dispatcher.config import ClientConfig
from dispatcher.errors import Unauthorized
from dispatcher.sandbox.server import ServerThread
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, settings_from_env
from tests.seed import SEED_BODY, SEED_CHANNEL, SEED_CLIENT, SEED_VIDEO

pytestmark = pytest.mark.integration

SEED_SECRET = "seed-client-secret"
MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


def scrape(url: str) -> dict[str, float]:
    response = httpx.get(f"{url}/metrics", timeout=10)
    response.raise_for_status()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def wait_delivered(api: Client, message_id: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    record: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        record = api.status(message_id)
        if record and record["state"] in ("delivered", "failed", "dead"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"{message_id} not terminal in {timeout}s: {record}")


SEED_QUERY = {"apiVersion": "01", "client": SEED_CLIENT, "channel": SEED_CHANNEL, "version": "2.0"}
"""The seed's four query parameters, exactly."""


def place_seed_video(qiniu_sim: Any) -> None:
    placed = {
        "fsize": 1_048_576,
        "mimeType": "video/mp4",
        "duration": 9,
        "width": 640,
        "height": 360,
    }
    httpx.put(
        f"{qiniu_sim.url}/_sandbox/objects/{SEED_VIDEO}", json=placed, timeout=10
    ).raise_for_status()


def seed_settings(worker_env: dict[str, str], **flags: bool) -> Any:
    client = ClientConfig(secret=SecretStr(SEED_SECRET), channels=[SEED_CHANNEL], **flags)
    return settings_from_env(worker_env).model_copy(update={"clients": {SEED_CLIENT: client}})


def post_seed(url: str, params: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{url}{SUBMIT}",
        params=params,
        content=SEED_BODY,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )


def test_seed_request_over_http_is_delivered_and_counted(
    worker_env: dict[str, str], easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    settings = seed_settings(worker_env)
    place_seed_video(qiniu_sim)
    body = SEED_BODY
    start_worker()

    with ServerThread(create_app(settings)) as server:
        before = scrape(server.url)

        # 1. The seed's query parameters plus timestamp and nonce, signed v2.
        params = {**SEED_QUERY, "timestamp": str(int(time.time())), "nonce": "seed0001"}
        params["sign"] = compute_sign(SEED_SECRET, "POST", SUBMIT, params, body)
        response = post_seed(server.url, params)
        assert response.status_code == 200, response.text
        envelope = response.json()
        assert (
            envelope["code"] == 200 and envelope["message"] == "成功" and envelope["page"] is None
        )
        assert set(envelope["foot"]) == {"operationTime", "servicePhone", "host"}
        seed_id = envelope["data"]["getMessageId"]

        with Client(server.url, SEED_CLIENT, SEED_SECRET, channel=SEED_CHANNEL) as api:
            # 2. The same body through the signing client (timestamp + nonce).
            client_id = api.submit(body)
            seed_record = wait_delivered(api, seed_id)
            client_record = wait_delivered(api, client_id)
            assert api.status_many([seed_id, "unknown0", client_id]) == [
                seed_record,
                None,
                client_record,
            ]
            # A client that is refused does not move the accepted counter.
            intruder = Client(server.url, SEED_CLIENT, "wrong", channel=SEED_CHANNEL)
            with intruder, pytest.raises(Unauthorized, match="authentication failed"):
                intruder.submit(body)
        after = scrape(server.url)

    for record in (seed_record, client_record):
        assert record["state"] == "delivered", record
        assert record["client"] == SEED_CLIENT
        assert record["targetType"] == "chatgroups"
        assert record["providerMessageId"]
    sent = [
        e["json"]
        for e in easemob.requests(MESSAGES_PATH)
        if e["path"] == MESSAGES_PATH
        and (e["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId") == seed_id
    ]
    # One receipt, unless an attempt timed out after the provider took it (then it is retried
    # and the history says so): never more receipts than attempts (I2 in docs/reliability.md).
    assert 1 <= len(sent) <= seed_record["attempts"], (seed_record["history"], sent)
    assert sent[0]["target"] == ["148992289019003396"]
    assert sent[0]["ext"]["chatChannel"] == "f2b91d57f9cb4db7a06926b2fd5d9caf"
    assert sent[0]["msg"]["type"] == "video"
    assert sent[0]["msg"]["filename"] == SEED_VIDEO
    assert sent[0]["msg"]["length"] == 9
    assert sent[0]["msg"]["file_length"] == 1_048_576

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved("dispatcher_submitted_total") == 3
    assert moved(f"dispatcher_accepted_total{{client={SEED_CLIENT}}}") == 2
    assert moved("dispatcher_rejected_total{client=-,reason=unauthorized}") == 1
    assert moved("dispatcher_delivered_total") >= 2
    assert moved("dispatcher_delivery_latency_seconds_count") >= 2
    assert moved("dispatcher_delivery_latency_seconds_bucket{le=+Inf}") >= 2
    queue = worker_env["DISPATCHER_QUEUE"]
    assert after[f"dispatcher_queue_depth{{queue={queue}}}"] == 0
    assert after[f"dispatcher_queue_oldest_age_seconds{{queue={queue}}}"] == 0
    assert after["dispatcher_redis_up"] == after["dispatcher_broker_up"] == 1


def test_the_seeds_exact_query_is_delivered_for_a_legacy_client_only(
    worker_env: dict[str, str], easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    """The seed's request byte for byte (no timestamp, no nonce, sign over query and body):
    401 for a client on signature v2, delivered for one configured ``legacy_signing``."""
    place_seed_video(qiniu_sim)
    params = {**SEED_QUERY, "sign": compute_legacy_sign(SEED_SECRET, SEED_QUERY, SEED_BODY)}
    with ServerThread(create_app(seed_settings(worker_env))) as server:
        refused = post_seed(server.url, params)
    assert refused.status_code == 401, refused.text

    start_worker()
    with ServerThread(create_app(seed_settings(worker_env, legacy_signing=True))) as server:
        response = post_seed(server.url, params)
        assert response.status_code == 200, response.text
        message_id = response.json()["data"]["getMessageId"]
        with Client(server.url, SEED_CLIENT, SEED_SECRET, channel=SEED_CHANNEL) as api:
            record = wait_delivered(api, message_id)
    assert record["state"] == "delivered", record
    [sent] = [
        e["json"]
        for e in easemob.requests(MESSAGES_PATH)
        if (e["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId") == message_id
    ][:1]
    assert sent["msg"]["type"] == "video" and sent["msg"]["filename"] == SEED_VIDEO
