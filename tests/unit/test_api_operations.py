"""Operations endpoints (/healthz, /readyz, /metrics, /openapi.json, /docs), FastAPI's own
errors in the envelope, and the settings hand-over of ``run_api``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import keys
from dispatcher.api.app import settings_environment
from dispatcher.config import Settings
from dispatcher.embedded import free_port
from dispatcher.store import LATENCY_BUCKETS_MS
from tests.unit.test_api_support import TEXT, Harness, envelope_ok, field_errors, make_harness


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def scrape(api: Harness) -> dict[str, float]:
    """Every sample of /metrics by name and labels, after parsing with Prometheus's parser."""
    response = api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_healthz_answers_200_in_the_envelope(api: Harness) -> None:
    response = api.http.get("/healthz")
    assert response.status_code == 200
    assert envelope_ok(response)["data"] == {"status": "ok"}


def test_readyz_answers_200_when_redis_and_broker_answer(api: Harness) -> None:
    response = api.http.get("/readyz")
    assert response.status_code == 200
    data = envelope_ok(response)["data"]
    assert (data["redis"], data["broker"]) == ("ok", "ok")
    assert isinstance(data["warnings"], list)  # tests/integration/test_persistence_warning.py


def test_readyz_answers_503_naming_the_broker_when_it_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = api.http.get("/readyz")
        assert response.status_code == 503
        envelope = envelope_ok(response)
        assert envelope["data"] == {"redis": "ok", "broker": "unreachable"}
        assert "broker" in envelope["message"]
    finally:
        api.close()


def test_readyz_answers_503_when_redis_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = api.http.get("/readyz")
        assert response.status_code == 503
        assert envelope_ok(response)["data"]["redis"] == "unreachable"
    finally:
        api.close()


def test_metrics_counters_move_with_submit_traffic(api: Harness) -> None:
    before = scrape(api)
    assert api.submit(TEXT).status_code == 200
    assert api.submit(TEXT).status_code == 200
    assert api.submit(b"{").status_code == 400
    assert api.submit(TEXT, secret="wrong").status_code == 401
    after = scrape(api)
    assert after["dispatcher_submitted_total"] - before["dispatcher_submitted_total"] == 4
    assert after["dispatcher_accepted_total"] - before["dispatcher_accepted_total"] == 2
    assert (
        after["dispatcher_rejected_total{reason=invalid}"]
        == before["dispatcher_rejected_total{reason=invalid}"] + 1
    )
    assert (
        after["dispatcher_rejected_total{reason=unauthorized}"]
        == before["dispatcher_rejected_total{reason=unauthorized}"] + 1
    )
    assert after["dispatcher_rejected_total{reason=rate_limited}"] == 0
    assert after["dispatcher_queue_depth"] == 2


def test_metrics_report_the_fleet_counters_kept_in_redis(api: Harness) -> None:
    api.redis.delete(keys.STATS)
    api.redis.hset(
        keys.STATS,
        mapping={
            "state:delivered": 7,
            "state:failed": 2,
            "state:dead": 1,
            "state:retrying": 5,
            "latency:count": 7,
            "latency:sum_ms": 2100,
            f"latency:le:{LATENCY_BUCKETS_MS[0]}": 1,
            f"latency:le:{LATENCY_BUCKETS_MS[-1]}": 7,
        },
    )
    try:
        samples = scrape(api)
    finally:
        api.redis.delete(keys.STATS)
    assert samples["dispatcher_delivered_total"] == 7
    assert samples["dispatcher_failed_total"] == 2
    assert samples["dispatcher_dead_total"] == 1
    assert samples["dispatcher_retries_total"] == 5
    assert samples["dispatcher_delivery_latency_seconds_count"] == 7
    assert samples["dispatcher_delivery_latency_seconds_sum"] == pytest.approx(2.1)
    first = f"dispatcher_delivery_latency_seconds_bucket{{le={LATENCY_BUCKETS_MS[0] / 1000}}}"
    assert samples[first] == 1
    assert samples["dispatcher_delivery_latency_seconds_bucket{le=+Inf}"] == 7
    assert samples["dispatcher_redis_up"] == 1


def test_metrics_still_scrape_when_redis_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert api.submit(TEXT).status_code == 503
        samples = scrape(api)
    finally:
        api.close()
    assert samples["dispatcher_redis_up"] == 0
    assert samples["dispatcher_rejected_total{reason=unavailable}"] == 1
    assert "dispatcher_delivered_total" not in samples


def test_each_app_has_its_own_metrics_registry(redis_url: str) -> None:
    first, second = make_harness(redis_url), make_harness(redis_url)
    try:
        assert first.submit(TEXT).status_code == 200
        assert scrape(first)["dispatcher_submitted_total"] == 1
        assert scrape(second)["dispatcher_submitted_total"] == 0
    finally:
        first.close()
        second.close()


def test_openapi_documents_the_real_submit_body_and_the_envelopes(api: Harness) -> None:
    response = api.http.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    submit = schema["paths"]["/sender/v1/handleBasicMessage"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SubmitRequest"}
    components = schema["components"]["schemas"]
    variants = [v["$ref"].rsplit("/", 1)[1] for v in components["SubmitRequest"]["oneOf"]]
    assert len(variants) == 10
    video = components["SubmitVideo"]
    assert video["properties"]["messageType"]["const"] == 4
    assert video["properties"]["messageInfo"] == {"$ref": "#/components/schemas/VideoInfo"}
    assert {"messageType", "from", "to", "messageInfo"} <= set(video["required"])
    assert "videoMessage" in components["VideoInfo"]["required"]
    assert set(submit["responses"]) == {"200", "400", "401", "409", "413", "429", "503"}
    params = {p["name"]: p for p in submit["parameters"]}
    assert {"apiVersion", "client", "channel", "version", "timestamp", "nonce", "sign"} == set(
        params
    )
    assert params["sign"]["required"] is True
    assert "HTTPValidationError" not in components
    assert "StatusRecord" in components
    assert "/sender/v1/messages/{getMessageId}" in schema["paths"]
    assert "/sender/v1/messages/status" in schema["paths"]


def test_docs_page_is_served(api: Harness) -> None:
    response = api.http.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_unknown_route_is_404_in_the_envelope(api: Harness) -> None:
    response = api.http.get("/sender/v1/nothing-here")
    assert response.status_code == 404
    assert envelope_ok(response)["data"] is None


def test_wrong_method_is_405_in_the_envelope(api: Harness) -> None:
    response = api.http.get("/sender/v1/handleBasicMessage")
    assert response.status_code == 405
    assert envelope_ok(response)["message"]
    assert "POST" in response.headers["allow"]


def test_request_validation_errors_use_the_envelope_not_fastapis_shape(api: Harness) -> None:
    path = "/sender/v1/messages/" + "x" * 65
    response = api.http.get(path, params=api.params(method="GET", path=path))
    assert response.status_code == 400
    assert "detail" not in response.json()
    assert "getMessageId" in field_errors(response)


def test_settings_survive_the_hand_over_to_uvicorn_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings.model_validate(
        {
            "clients": {"c1": {"secret": "s3cret", "channels": ["a", "b"], "admin": True}},
            "auth_enabled": False,
            "easemob_client_secret": "easemob-secret",
            "submit_rate_per_second": 12.5,
            "queue": "q1",
            "qiniu_domain": "media.example.com",
        }
    )
    env = settings_environment(original)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"DISPATCHER_{name.upper()}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    assert rebuilt.clients["c1"].secret.get_secret_value() == "s3cret"
    assert rebuilt.clients["c1"].channels == ["a", "b"] and rebuilt.clients["c1"].admin
    assert rebuilt.easemob_client_secret is not None
    assert rebuilt.easemob_client_secret.get_secret_value() == "easemob-secret"
    for name in Settings.model_fields:
        if name not in ("clients", "easemob_client_secret"):
            assert getattr(rebuilt, name) == getattr(original, name), name
